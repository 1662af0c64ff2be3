import numpy as np
import pytest

from simmim.crypto.aggregation import aggregate, decrypt_sum, encrypt_update
from simmim.crypto.encoding import FixedPoint
from simmim.errors import CryptoError

CODEC = FixedPoint(fraction_bits=16, max_abs=4.0)


def test_sum_of_parties_updates(keys_1024):
    public, private = keys_1024
    rng = np.random.default_rng(0)
    updates = [rng.uniform(-4, 4, size=(30, 11)) for _ in range(6)]
    blobs = [encrypt_update(public, u, parties=6, codec=CODEC) for u in updates]
    total = aggregate(blobs, public)
    np.testing.assert_allclose(decrypt_sum(private, total).reshape(30, 11), sum(updates), atol=6 * 2.0**-17)
    assert sum(len(b) for b in blobs) < 6 * 330 * 256 / 10  # packing: well under one ciphertext per value


def test_more_parties_than_declared_are_refused_when_they_could_overflow(keys_1024):
    public, _ = keys_1024
    blobs = [encrypt_update(public, np.full(20, 4.0), parties=2, codec=CODEC) for _ in range(5)]
    with pytest.raises(CryptoError, match="could overflow"):
        aggregate(blobs, public)


def test_updates_under_another_key_or_no_updates_are_refused(keys_1024, keys_512):
    blob = encrypt_update(keys_512[0], np.ones(5), parties=2, codec=CODEC)
    with pytest.raises(CryptoError, match="different public key"):
        aggregate([blob], keys_1024[0])
    with pytest.raises(CryptoError, match="no updates"):
        aggregate([], keys_1024[0])
    with pytest.raises(CryptoError, match="parties"):
        encrypt_update(keys_1024[0], np.ones(5), parties=0)
