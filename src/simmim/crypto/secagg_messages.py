"""The secure-aggregation messages and their binary format (transport-agnostic: bytes in, bytes out).

One message per protocol step, in order (server -> clients, then clients -> server):

    RoundConfig      server -> all     round id, participants, threshold, vector length, quantisation
    PublicKeys       client -> server  the client's two X25519 public keys for this round
    KeyDirectory     server -> all     every advertised key pair (the set U1)
    EncryptedShares  client -> server  one sealed Shamir share bundle per other client in U1
    ShareDelivery    server -> client  the bundles addressed to that client (their senders form U2)
    MaskedInput      client -> server  the masked, quantised update: one 32-bit word per parameter
    UnmaskRequest    server -> all     who sent a masked input (U3) and who dropped (U2 - U3)
    UnmaskShares     client -> server  shares of survivors' self-mask seeds and of dropped clients' keys

`encode` and `decode` give every message a self-describing, versioned byte form so that the protocol
runs the same in-process, over Flower messages or over any other transport. `decode` refuses anything
malformed, truncated, padded or of an unknown type with CryptoError; whether a well-formed message is
acceptable (round, sender, stage) is the state machines' business (`secagg`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from simmim.errors import CryptoError

FORMAT_MAGIC = b"SAG1"
WORD_DTYPE = np.dtype("<u4")


@dataclass(frozen=True)
class RoundConfig:
    """What every participant must agree on before a round; chosen by the server.

    Attributes:
        round_id: 16 fresh random bytes naming this round; every key, mask and ciphertext is bound to it.
        clients: The participants' ids (their Shamir evaluation points), distinct, in [1, 2^31).
        threshold: Shares needed to recover a secret; the round is refused once fewer clients remain.
        vector_length: Number of parameters in each update.
        clip: Every coordinate of an update is clipped to [-clip, clip] before quantisation.
        fraction_bits: Coordinates are quantised to multiples of 2^-fraction_bits in signed 32-bit words.
        neighbours: 0: every client pairs with every other (SecAgg); k: each pairs with k (SecAgg+).
    """

    round_id: bytes
    clients: tuple[int, ...]
    threshold: int
    vector_length: int
    clip: float
    fraction_bits: int
    neighbours: int = 0


@dataclass(frozen=True)
class PublicKeys:
    """A client's X25519 public keys: one to encrypt share bundles, one to agree pairwise masks."""

    round_id: bytes
    sender: int
    encryption_key: bytes
    mask_key: bytes


@dataclass(frozen=True)
class KeyDirectory:
    """The public keys of every client that advertised them (U1): id -> (encryption key, mask key)."""

    round_id: bytes
    encryption_keys: Mapping[int, bytes]
    mask_keys: Mapping[int, bytes]


@dataclass(frozen=True)
class EncryptedShares:
    """One sender's sealed share bundles, by recipient."""

    round_id: bytes
    sender: int
    ciphertexts: Mapping[int, bytes]


@dataclass(frozen=True)
class ShareDelivery:
    """The sealed share bundles addressed to `recipient`, by sender."""

    round_id: bytes
    recipient: int
    ciphertexts: Mapping[int, bytes]


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """A client's masked update: uint32 words, one per parameter."""

    round_id: bytes
    sender: int
    words: np.ndarray


@dataclass(frozen=True)
class UnmaskRequest:
    """Who sent a masked input (`survivors`, U3) and who dropped after sharing (`dropped`, U2 - U3)."""

    round_id: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskShares:
    """A client's shares of survivors' self-mask seeds and of dropped clients' mask keys, by owner."""

    round_id: bytes
    sender: int
    self_mask_shares: Mapping[int, bytes]
    mask_key_shares: Mapping[int, bytes]


Message = (RoundConfig | PublicKeys | KeyDirectory | EncryptedShares | ShareDelivery | MaskedInput | UnmaskRequest
           | UnmaskShares)

# Field kinds by message type; the tag byte is the position in this table, so only append to it.
_SCHEMAS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (RoundConfig, ("bytes", "ints", "int", "int", "float", "int", "int")),
    (PublicKeys, ("bytes", "int", "bytes", "bytes")),
    (KeyDirectory, ("bytes", "bytemap", "bytemap")),
    (EncryptedShares, ("bytes", "int", "bytemap")),
    (ShareDelivery, ("bytes", "int", "bytemap")),
    (MaskedInput, ("bytes", "int", "words")),
    (UnmaskRequest, ("bytes", "ints", "ints")),
    (UnmaskShares, ("bytes", "int", "bytemap", "bytemap")),
)
_TAGS = {cls: tag for tag, (cls, _) in enumerate(_SCHEMAS)}
_MAX_INT = 2**63 - 1


def encode(message: Message) -> bytes:
    """The message's byte form: magic, type tag, then each field in declaration order."""
    tag = _TAGS.get(type(message))
    if tag is None:
        raise CryptoError(f"cannot encode a {type(message).__name__}; expected a secure-aggregation message")
    parts = [FORMAT_MAGIC, bytes([tag])]
    for field, kind in zip(fields(message), _SCHEMAS[tag][1]):
        parts.append(_ENCODERS[kind](getattr(message, field.name), field.name))
    return b"".join(parts)


def decode(data: bytes) -> Message:
    """The message `encode` made; CryptoError for anything else."""
    view = memoryview(bytes(data))
    if len(view) < 5 or view[:4] != FORMAT_MAGIC:
        raise CryptoError("not a secure-aggregation message (bad magic)")
    if view[4] >= len(_SCHEMAS):
        raise CryptoError(f"unknown secure-aggregation message type {view[4]}")
    cls, kinds = _SCHEMAS[view[4]]
    reader = _Reader(view, 5)
    values = [_DECODERS[kind](reader) for kind in kinds]
    if reader.offset != len(view):
        raise CryptoError(f"{len(view) - reader.offset} unexpected bytes after a {cls.__name__}")
    return cls(*values)


def _encode_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= _MAX_INT:
        raise CryptoError(f"{name} must be a non-negative integer below 2^63, got {value!r}")
    return struct.pack("<Q", int(value))


def _encode_float(value, name):
    if not isinstance(value, float | int) or not math.isfinite(value):
        raise CryptoError(f"{name} must be a finite number, got {value!r}")
    return struct.pack("<d", float(value))


def _encode_bytes(value, name):
    if not isinstance(value, bytes | bytearray):
        raise CryptoError(f"{name} must be bytes, got {type(value).__name__}")
    return struct.pack("<I", len(value)) + bytes(value)


def _encode_ints(values, name):
    return struct.pack("<I", len(values)) + b"".join(_encode_int(v, name) for v in values)


def _encode_bytemap(mapping, name):
    if not isinstance(mapping, Mapping):
        raise CryptoError(f"{name} must be a mapping from ids to bytes")
    items = sorted(mapping.items())
    return struct.pack("<I", len(items)) + b"".join(_encode_int(k, name) + _encode_bytes(v, name) for k, v in items)


def _encode_words(words, name):
    array = np.asarray(words)
    if array.ndim != 1 or array.dtype.kind != "u" or array.dtype.itemsize != 4:
        raise CryptoError(f"{name} must be a 1-D array of uint32 words, got {array.dtype} of shape {array.shape}")
    return struct.pack("<Q", array.size) + array.astype(WORD_DTYPE, copy=False).tobytes()


class _Reader:
    def __init__(self, view: memoryview, offset: int):
        self.view, self.offset = view, offset

    def take(self, count: int) -> memoryview:
        if count < 0 or self.offset + count > len(self.view):
            raise CryptoError("truncated secure-aggregation message")
        chunk = self.view[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]


def _decode_int(reader):
    value = reader.unpack("<Q")
    if value > _MAX_INT:
        raise CryptoError("integer field out of range in a secure-aggregation message")
    return value


def _decode_bytes(reader):
    return bytes(reader.take(reader.unpack("<I")))


def _decode_ints(reader):
    return tuple(_decode_int(reader) for _ in range(reader.unpack("<I")))


def _decode_bytemap(reader):
    mapping = {}
    for _ in range(reader.unpack("<I")):
        key = _decode_int(reader)
        if key in mapping:
            raise CryptoError(f"id {key} appears twice in a secure-aggregation message")
        mapping[key] = _decode_bytes(reader)
    return mapping


def _decode_float(reader):
    value = reader.unpack("<d")
    if not math.isfinite(value):
        raise CryptoError("non-finite number in a secure-aggregation message")
    return value


def _decode_words(reader):
    count = reader.unpack("<Q")
    if count > len(reader.view):
        raise CryptoError("truncated secure-aggregation message")
    return np.frombuffer(reader.take(count * WORD_DTYPE.itemsize), dtype=WORD_DTYPE)  # read-only view


_ENCODERS = {"int": _encode_int, "float": _encode_float, "bytes": _encode_bytes, "ints": _encode_ints,
             "bytemap": _encode_bytemap, "words": _encode_words}
_DECODERS = {"int": _decode_int, "float": _decode_float, "bytes": _decode_bytes, "ints": _decode_ints,
             "bytemap": _decode_bytemap, "words": _decode_words}
