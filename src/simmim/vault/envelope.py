"""Sealing record payloads: AES-256-GCM under the subject's data key, in chunks.

Layout: the plaintext is cut into chunks of ``chunk_bytes`` (the last may be shorter; an empty
payload is one empty chunk); each chunk is stored as ``nonce (12) || ciphertext || tag (16)``,
the chunks back to back. The associated data of chunk ``i`` of ``n`` is
``rec|record ref|subject ref|key version|revision|i|n``: a ciphertext moved to another record or
subject, decrypted under another key version, replayed from an older revision, or with chunks
reordered, dropped or appended fails authentication.

Nonce policy: every chunk gets a fresh random 96-bit nonce from the OS CSPRNG. Random nonces are
safe while a key seals at most 2**32 messages (NIST SP 800-38D, 8.3); each data key counts what it
sealed (``vault_subject_keys.encryptions``) and the vault moves the subject to a new key version
before that count would pass `MAX_MESSAGES_PER_KEY`.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from simmim.errors import VaultError

NONCE_BYTES = 12
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 1 << 20  # 1 MiB: a large clip is sealed and opened chunk by chunk
MAX_MESSAGES_PER_KEY = 2**32
_RECORD_CONTEXT = b"simmim-vault/v1/rec|"
_NUMBERS = struct.Struct(">QQQQ")


class PayloadAuthenticationError(VaultError):
    """A stored ciphertext does not authenticate: it was changed, moved or is read with the wrong key."""


def chunk_count(plaintext_bytes: int, chunk_bytes: int) -> int:
    """How many AES-GCM messages a payload of this size takes (each a nonce drawn under the key)."""
    return max(1, -(-plaintext_bytes // chunk_bytes))


def _associated(record_ref: str, subject_ref: str, key_version: int, revision: int, index: int, count: int) -> bytes:
    # Pseudonyms are fixed-length hex, so plain concatenation with separators is unambiguous.
    return b"".join((_RECORD_CONTEXT, record_ref.encode("ascii"), b"|", subject_ref.encode("ascii"), b"|",
                     _NUMBERS.pack(key_version, revision, index, count)))


def cipher(data_key: bytes | AESGCM) -> AESGCM:
    """The AES-GCM cipher of a data key (given as bytes, or as the cipher already made for it)."""
    return data_key if isinstance(data_key, AESGCM) else AESGCM(data_key)


def seal_payload(data_key: bytes | AESGCM, plaintext: bytes, *, record_ref: str, subject_ref: str, key_version: int,
                 revision: int, chunk_bytes: int) -> bytes:
    """Encrypts a payload (see the module docstring for the layout and associated data)."""
    aead = cipher(data_key)
    count = chunk_count(len(plaintext), chunk_bytes)
    sealed = []
    for index in range(count):
        chunk = plaintext[index * chunk_bytes:(index + 1) * chunk_bytes]
        nonce = os.urandom(NONCE_BYTES)
        associated = _associated(record_ref, subject_ref, key_version, revision, index, count)
        sealed.append(nonce + aead.encrypt(nonce, chunk, associated))
    return b"".join(sealed)


def open_payload(data_key: bytes | AESGCM, payload: bytes, *, record_ref: str, subject_ref: str, key_version: int,
                 revision: int, chunk_bytes: int, plaintext_bytes: int, what: str) -> bytes:
    """Decrypts and authenticates a payload; ``what`` names the record in the error.

    Raises:
        PayloadAuthenticationError: If any chunk fails authentication or the layout is off.
    """
    aead = cipher(data_key)
    count = chunk_count(plaintext_bytes, chunk_bytes)
    overhead = NONCE_BYTES + TAG_BYTES
    if len(payload) != plaintext_bytes + count * overhead:
        raise PayloadAuthenticationError(f"{what}: stored ciphertext has {len(payload)} bytes, expected "
                                         f"{plaintext_bytes + count * overhead}; it was cut or extended")
    plain = []
    offset = 0
    for index in range(count):
        size = min(chunk_bytes, plaintext_bytes - index * chunk_bytes) + overhead
        piece = payload[offset:offset + size]
        offset += size
        associated = _associated(record_ref, subject_ref, key_version, revision, index, count)
        try:
            plain.append(aead.decrypt(piece[:NONCE_BYTES], piece[NONCE_BYTES:], associated))
        except InvalidTag:
            raise PayloadAuthenticationError(
                f"{what}: ciphertext chunk {index + 1} of {count} fails authentication (changed, moved from "
                f"another record, or read with the wrong key); nothing of it was returned") from None
    return b"".join(plain)
