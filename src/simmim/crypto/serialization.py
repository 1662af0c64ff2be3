"""Compact binary formats for keys and encrypted vectors, versioned and validated on load.

Every blob starts with b"SMHE", a format version and a kind byte; numbers are big-endian.

    public key   key_bits:u16  n:key_bytes  h_s:2*key_bytes
    private key  <public key body>  p:half_bytes  q:half_bytes
    vector       key fingerprint:16  key_bits:u16  length:u64  slot_bits:u16  slots:u16
                 fraction_bits:u16  bound_len:u16  bound:bound_len  count:u32
                 count ciphertexts of 2*key_bytes each

A ciphertext takes exactly 2 * key_bytes (512 bytes at 2048 bits) whatever it holds, so a
packed vector costs 512 / slots bytes per value. Loading checks lengths, ranges and the key
fingerprint and raises `CryptoError` (one clear line) for anything truncated or malformed.
"""

from __future__ import annotations

import struct

import gmpy2

from simmim.crypto.encoding import SlotLayout
from simmim.crypto.paillier import PrivateKey, PublicKey
from simmim.crypto.vector import EncryptedVector
from simmim.errors import CryptoError

MAGIC = b"SMHE"
VERSION = 1
KIND_PUBLIC_KEY, KIND_PRIVATE_KEY, KIND_VECTOR = 1, 2, 3
_KIND_NAMES = {KIND_PUBLIC_KEY: "public key", KIND_PRIVATE_KEY: "private key", KIND_VECTOR: "encrypted vector"}
_HEADER = struct.Struct(">4sBB")
_VECTOR_FIELDS = struct.Struct(">16sHQHHHH")


class _Reader:
    """Reads fields from a blob; running past its end is a CryptoError naming what was being read."""

    def __init__(self, data: bytes, what: str):
        self.data, self.offset, self.what = memoryview(data), 0, what

    def take(self, size: int, field: str) -> bytes:
        if self.offset + size > len(self.data):
            raise CryptoError(f"{self.what} is truncated (ends inside {field})")
        chunk = self.data[self.offset: self.offset + size].tobytes()
        self.offset += size
        return chunk

    def unpack(self, layout: struct.Struct, field: str) -> tuple:
        return layout.unpack(self.take(layout.size, field))

    def integer(self, size: int, field: str) -> gmpy2.mpz:
        return gmpy2.mpz(int.from_bytes(self.take(size, field), "big"))

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise CryptoError(f"{self.what} has {len(self.data) - self.offset} unexpected trailing bytes")


def _open(data: bytes, kind: int) -> _Reader:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CryptoError(f"expected bytes for a {_KIND_NAMES[kind]}, got {type(data).__name__}")
    reader = _Reader(bytes(data), _KIND_NAMES[kind])
    magic, version, found = reader.unpack(_HEADER, "the header")
    if magic != MAGIC:
        raise CryptoError(f"not a SimMIM HE {_KIND_NAMES[kind]} (bad magic bytes)")
    if version != VERSION:
        raise CryptoError(f"unsupported HE format version {version} (this SimMIM reads version {VERSION})")
    if found != kind:
        raise CryptoError(f"expected a {_KIND_NAMES[kind]}, found a {_KIND_NAMES.get(found, f'kind {found}')}")
    return reader


def _key_bytes(bits: int) -> int:
    return (bits + 7) // 8


def _public_body(key: PublicKey) -> bytes:
    size = _key_bytes(key.bits)
    return struct.pack(">H", key.bits) + int(key.n).to_bytes(size, "big") + int(key.h_s).to_bytes(2 * size, "big")


def _read_public(reader: _Reader) -> PublicKey:
    (bits,) = reader.unpack(struct.Struct(">H"), "the key size")
    size = _key_bytes(bits)
    n = reader.integer(size, "n")
    h_s = reader.integer(2 * size, "h_s")
    if n.bit_length() != bits:
        raise CryptoError(f"malformed public key: n has {n.bit_length()} bits, header says {bits}")
    return PublicKey(n=n, h_s=h_s)


def public_key_to_bytes(key: PublicKey) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, KIND_PUBLIC_KEY) + _public_body(key)


def public_key_from_bytes(data: bytes) -> PublicKey:
    reader = _open(data, KIND_PUBLIC_KEY)
    key = _read_public(reader)
    reader.finish()
    return key


def private_key_to_bytes(key: PrivateKey) -> bytes:
    half = _key_bytes(key.public_key.bits // 2)
    return (_HEADER.pack(MAGIC, VERSION, KIND_PRIVATE_KEY) + _public_body(key.public_key)
            + int(key.p).to_bytes(half, "big") + int(key.q).to_bytes(half, "big"))


def private_key_from_bytes(data: bytes) -> PrivateKey:
    reader = _open(data, KIND_PRIVATE_KEY)
    public = _read_public(reader)
    half = _key_bytes(public.bits // 2)
    p, q = reader.integer(half, "p"), reader.integer(half, "q")
    reader.finish()
    return PrivateKey(public_key=public, p=p, q=q)


def vector_to_bytes(vector: EncryptedVector) -> bytes:
    key = vector.public_key
    size = 2 * _key_bytes(key.bits)
    bound = int(vector.bound).to_bytes(max(1, (int(vector.bound).bit_length() + 7) // 8), "big")
    head = _HEADER.pack(MAGIC, VERSION, KIND_VECTOR) + _VECTOR_FIELDS.pack(
        key.fingerprint, key.bits, vector.length, vector.layout.slot_bits, vector.layout.slots,
        vector.fraction_bits, len(bound))
    return b"".join([head, bound, struct.pack(">I", len(vector.ciphertexts)),
                     *(int(c).to_bytes(size, "big") for c in vector.ciphertexts)])


def vector_from_bytes(data: bytes, public_key: PublicKey) -> EncryptedVector:
    """An encrypted vector, checked to be under `public_key` and well formed."""
    reader = _open(data, KIND_VECTOR)
    fingerprint, bits, length, slot_bits, slots, fraction_bits, bound_len = reader.unpack(
        _VECTOR_FIELDS, "the vector header")
    if fingerprint != public_key.fingerprint or bits != public_key.bits:
        raise CryptoError("this encrypted vector was made under a different public key")
    bound = int.from_bytes(reader.take(bound_len, "the slot bound"), "big")
    (count,) = reader.unpack(struct.Struct(">I"), "the ciphertext count")
    layout = SlotLayout(slot_bits=slot_bits, slots=slots)
    if slot_bits > bits - 1 or layout.plaintext_count(length) != count or length == 0:
        raise CryptoError(f"malformed encrypted vector: {count} ciphertexts, {length} values, "
                          f"{slots} slots of {slot_bits} bits")
    size = 2 * _key_bytes(bits)
    expected = reader.offset + count * size
    if len(reader.data) < expected:
        raise CryptoError(f"encrypted vector is truncated: {len(reader.data)} of {expected} bytes")
    ciphertexts = tuple(public_key.check_ciphertext(reader.integer(size, "a ciphertext")) for _ in range(count))
    reader.finish()
    return EncryptedVector(public_key=public_key, ciphertexts=ciphertexts, length=length, layout=layout,
                           fraction_bits=fraction_bits, bound=bound)
