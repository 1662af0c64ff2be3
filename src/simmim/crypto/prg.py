"""Cryptographic pseudo-random words: seed expansion by AES-256-CTR and fresh randomness from the OS.

`expand_seed` turns a 32-byte seed into as many 32- or 64-bit words as asked for: the AES-256-CTR
keystream under the seed as key (counter block starting at zero), read little-endian. Anyone holding
the seed gets the same words on any machine; without it the words are indistinguishable from uniform
as long as AES is a pseudo-random permutation (128-bit security, 2^64 blocks per seed at most, far
beyond any vector length here). Each seed must serve one purpose only: callers derive distinct seeds
(HKDF with a purpose label) rather than reuse one.

`random_words` draws its own 32-byte seed from `secrets` (os.urandom) and expands it, which is exact
and about 30x faster than reading megabytes from os.urandom; no other source of randomness is used.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from simmim.errors import CryptoError

SEED_BYTES = 32
_WORD_DTYPES = {32: np.dtype("<u4"), 64: np.dtype("<u8")}
_ZERO_COUNTER = bytes(16)
# AES-CTR encrypts a buffer of zeros to produce the keystream; one zero buffer is kept and grown.
_zeros = bytearray()


def word_dtype(word_bits: int) -> np.dtype:
    """The little-endian unsigned numpy dtype for 32- or 64-bit words; CryptoError otherwise."""
    if word_bits not in _WORD_DTYPES:
        raise CryptoError(f"words must be 32 or 64 bits, got {word_bits}")
    return _WORD_DTYPES[word_bits]


def expand_seed(seed: bytes, count: int, word_bits: int = 32) -> np.ndarray:
    """`count` pseudo-random words (uint32 or uint64, writable) determined by the 32-byte `seed`."""
    global _zeros
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
        raise CryptoError(f"a PRG seed must be {SEED_BYTES} bytes")
    if count < 0:
        raise CryptoError(f"cannot expand a seed into {count} words")
    dtype = word_dtype(word_bits)
    length = count * dtype.itemsize
    if len(_zeros) < length:
        _zeros = bytearray(length)
    # update_into needs room for one extra block; the words are a view on the start of the buffer.
    out = bytearray(length + 15)
    encryptor = Cipher(algorithms.AES(bytes(seed)), modes.CTR(_ZERO_COUNTER)).encryptor()
    encryptor.update_into(memoryview(_zeros)[:length], out)
    return np.frombuffer(out, dtype=dtype, count=count)


def random_words(count: int, word_bits: int = 32) -> np.ndarray:
    """`count` uniformly random words from a fresh OS-CSPRNG seed."""
    return expand_seed(secrets.token_bytes(SEED_BYTES), count, word_bits)


def random_seed() -> bytes:
    """A fresh 32-byte seed from the OS CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)
