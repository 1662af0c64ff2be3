"""Encrypted aggregation: the key holder learns the sum of N parties' vectors and nothing else.

Each party encrypts its update packed, with headroom for the declared number of parties, and
sends bytes; an aggregator (without the private key) multiplies the ciphertexts; the key
holder decrypts only the sum. The overflow check makes a sum of more parties than declared,
or of inputs outside the declared range, an error instead of a wrong model update.

This protects the updates from the aggregator; the key holder must not also see individual
updates (keep the key holder and the aggregator apart, or use secure aggregation by masking).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from simmim.crypto.encoding import FixedPoint
from simmim.crypto.paillier import DEFAULT_MODE, PrivateKey, PublicKey
from simmim.crypto.serialization import vector_from_bytes, vector_to_bytes
from simmim.crypto.vector import EncryptedVector, decrypt_vector, encrypt_vector, sum_vectors
from simmim.errors import CryptoError

# Model updates after clipping: |x| <= 64, rounded to 2^-25.
UPDATE_CODEC = FixedPoint(fraction_bits=24, max_abs=64.0)


def encrypt_update(public_key: PublicKey, update: np.ndarray, *, parties: int, codec: FixedPoint = UPDATE_CODEC,
                   mode: str = DEFAULT_MODE, workers: int | None = None) -> bytes:
    """One party's update (any shape; flattened), encrypted and packed for a sum over `parties`."""
    if parties < 1:
        raise CryptoError(f"parties must be at least 1, got {parties}")
    flat = np.asarray(update).reshape(-1)
    vector = encrypt_vector(public_key, flat, codec=codec, max_additions=parties, mode=mode, workers=workers)
    return vector_to_bytes(vector)


def aggregate(updates: Iterable[bytes | EncryptedVector], public_key: PublicKey) -> EncryptedVector:
    """The encrypted sum of the parties' updates; needs only the public key."""
    vectors = [u if isinstance(u, EncryptedVector) else vector_from_bytes(u, public_key) for u in updates]
    if not vectors:
        raise CryptoError("no updates to aggregate")
    if any(v.public_key != public_key for v in vectors):
        raise CryptoError("an update was encrypted under a different public key")
    return sum_vectors(vectors)


def decrypt_sum(private_key: PrivateKey, total: EncryptedVector, *, workers: int | None = None) -> np.ndarray:
    """The key holder's view: the summed update as float64."""
    return decrypt_vector(private_key, total, workers=workers)
