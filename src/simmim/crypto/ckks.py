"""CKKS through TenSEAL (optional: `pip install 'simmim[ckks]'`): approximate HE on real vectors.

The same jobs as the Paillier path where they fit: encrypted dot products / linear heads and
sums of many parties' vectors. CKKS packs N/2 = 4096 reals per ciphertext and multiplies by
plaintext vectors natively, but its results are approximate: every ciphertext carries noise,
so a decrypted value is off by a small error, not exactly the rounded input as with Paillier.

Parameters (`CkksKeys.generate`): ring degree N = 8192, coefficient moduli 60+40+40+60 bits
(log Q = 200 <= 218, the HomomorphicEncryption.org standard's bound for 128-bit security at
N = 8192), scale 2^40: one multiplicative level, enough for a linear head.

Error, measured and checked in tests (values of magnitude <= 64 for sums, unit vectors for
dot products): fresh encrypt/decrypt and sums of 10 vectors stay below `SUM_ERROR_BOUND`
absolute error per value (measured 2-3e-8); a dot product with rotations below
`DOT_ERROR_BOUND` (measured 1.4-1.6e-6).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from simmim.errors import CryptoError

try:
    import tenseal as ts
except ImportError:  # optional extra
    ts = None

POLY_MODULUS_DEGREE = 8192
COEFF_MODULUS_BITS = (60, 40, 40, 60)
SCALE_BITS = 40
SUM_ERROR_BOUND = 1e-6
DOT_ERROR_BOUND = 1e-4
MAGIC, VERSION, KIND_CKKS_VECTOR = b"SMHE", 1, 4


def _tenseal():
    if ts is None:
        raise CryptoError("CKKS needs TenSEAL: pip install 'simmim[ckks]'")
    return ts


@dataclass(frozen=True)
class CkksKeys:
    """A TenSEAL context: with the secret key (client / key holder) or public only (server)."""

    context: object

    @classmethod
    def generate(cls, *, dot_products: bool = True) -> CkksKeys:
        """New keys; `dot_products` adds the Galois keys that rotations need (tens of MB)."""
        tenseal = _tenseal()
        context = tenseal.context(tenseal.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_MODULUS_DEGREE,
                                  coeff_mod_bit_sizes=list(COEFF_MODULUS_BITS))
        context.global_scale = 2.0**SCALE_BITS
        if dot_products:
            context.generate_galois_keys()
        return cls(context)

    @property
    def slots(self) -> int:
        return POLY_MODULUS_DEGREE // 2

    @property
    def has_secret_key(self) -> bool:
        return self.context.is_private()

    def public(self) -> CkksKeys:
        """The same keys without the secret key, for the server or aggregator."""
        context = self.context.copy()
        context.make_context_public()
        return CkksKeys(context)

    def to_bytes(self) -> bytes:
        return self.context.serialize(save_secret_key=self.has_secret_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksKeys:
        tenseal = _tenseal()
        try:
            return cls(tenseal.context_from(data))
        except Exception as exc:  # TenSEAL raises plain ValueError/RuntimeError for bad input
            raise CryptoError(f"not a valid CKKS context ({type(exc).__name__})") from None


@dataclass(frozen=True)
class CkksVector:
    """A vector of `length` reals in chunks of at most `keys.slots` values per ciphertext."""

    keys: CkksKeys
    chunks: tuple
    length: int

    def __len__(self) -> int:
        return self.length

    def __add__(self, other: CkksVector) -> CkksVector:
        if not isinstance(other, CkksVector):
            return NotImplemented
        if other.length != self.length:
            raise CryptoError(f"cannot add CKKS vectors of lengths {self.length} and {other.length}")
        return CkksVector(self.keys, tuple(a + b for a, b in zip(self.chunks, other.chunks)), self.length)

    def __radd__(self, other):
        if isinstance(other, int) and other == 0:
            return self
        return self.__add__(other)


def encrypt_vector(keys: CkksKeys, values: np.ndarray) -> CkksVector:
    tenseal = _tenseal()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise CryptoError(f"expected a non-empty 1-D vector, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise CryptoError("cannot encrypt NaN or infinite values")
    chunks = tuple(tenseal.ckks_vector(keys.context, array[i: i + keys.slots].tolist())
                   for i in range(0, array.size, keys.slots))
    return CkksVector(keys, chunks, int(array.size))


def decrypt_vector(keys: CkksKeys, vector: CkksVector) -> np.ndarray:
    if not keys.has_secret_key:
        raise CryptoError("decryption needs the CKKS keys with the secret key")
    return np.concatenate([np.asarray(chunk.decrypt(keys.context.secret_key())) for chunk in vector.chunks])


def sum_vectors(vectors: Iterable[CkksVector]) -> CkksVector:
    vectors = list(vectors)
    if not vectors:
        raise CryptoError("nothing to sum")
    return sum(vectors[1:], vectors[0])


def linear(vector: CkksVector, weights: np.ndarray, bias: np.ndarray | None = None) -> list:
    """Encrypted scores W x + b, one ciphertext per output (each a CKKS vector of one value)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != vector.length or len(vector.chunks) != 1:
        raise CryptoError(f"weights of shape {weights.shape} do not fit an encrypted vector of {vector.length} values "
                          f"(at most {vector.keys.slots} for a linear map)")
    if not vector.keys.context.has_galois_keys():
        raise CryptoError("dot products need CKKS keys generated with dot_products=True")
    bias = np.zeros(weights.shape[0]) if bias is None else np.broadcast_to(bias, (weights.shape[0],))
    (chunk,) = vector.chunks
    return [chunk.dot(row.tolist()) + float(b) for row, b in zip(weights, bias)]


def decrypt_scores(keys: CkksKeys, scores: list) -> np.ndarray:
    if not keys.has_secret_key:
        raise CryptoError("decryption needs the CKKS keys with the secret key")
    return np.array([score.decrypt(keys.context.secret_key())[0] for score in scores])


def vector_to_bytes(vector: CkksVector) -> bytes:
    parts = [struct.pack(">4sBBQI", MAGIC, VERSION, KIND_CKKS_VECTOR, vector.length, len(vector.chunks))]
    for chunk in vector.chunks:
        data = chunk.serialize()
        parts += [struct.pack(">Q", len(data)), data]
    return b"".join(parts)


def vector_from_bytes(data: bytes, keys: CkksKeys) -> CkksVector:
    tenseal = _tenseal()
    head = struct.Struct(">4sBBQI")
    if len(data) < head.size:
        raise CryptoError("CKKS vector is truncated (ends inside the header)")
    magic, version, kind, length, count = head.unpack_from(data)
    if magic != MAGIC or kind != KIND_CKKS_VECTOR:
        raise CryptoError("not a SimMIM CKKS vector")
    if version != VERSION:
        raise CryptoError(f"unsupported HE format version {version} (this SimMIM reads version {VERSION})")
    if count != -(-length // keys.slots) or length == 0:
        raise CryptoError(f"malformed CKKS vector: {count} chunks for {length} values")
    offset, chunks = head.size, []
    for _ in range(count):
        if offset + 8 > len(data):
            raise CryptoError("CKKS vector is truncated")
        (size,) = struct.unpack_from(">Q", data, offset)
        offset += 8
        if offset + size > len(data):
            raise CryptoError("CKKS vector is truncated")
        try:
            chunk = tenseal.ckks_vector_from(keys.context, data[offset: offset + size])
        except Exception as exc:  # TenSEAL raises plain ValueError/RuntimeError for bad input
            raise CryptoError(f"malformed CKKS ciphertext ({type(exc).__name__})") from None
        chunks.append(chunk)
        offset += size
    if offset != len(data):
        raise CryptoError(f"CKKS vector has {len(data) - offset} unexpected trailing bytes")
    if sum(chunk.size() for chunk in chunks) != length:
        raise CryptoError("malformed CKKS vector: chunk sizes do not add up to its length")
    return CkksVector(keys, tuple(chunks), length)
