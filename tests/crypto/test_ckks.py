"""CKKS through TenSEAL: errors within the documented bounds, sums and linear heads via bytes."""

import numpy as np
import pytest

pytest.importorskip("tenseal")

from simmim.crypto import ckks  # noqa: E402
from simmim.errors import CryptoError  # noqa: E402


@pytest.fixture(scope="module")
def keys():
    secret = ckks.CkksKeys.generate()
    return secret, ckks.CkksKeys.from_bytes(secret.public().to_bytes())


def test_public_keys_hold_no_secret(keys):
    secret, public = keys
    assert secret.has_secret_key and not public.has_secret_key
    with pytest.raises(CryptoError, match="secret key"):
        ckks.decrypt_vector(public, ckks.encrypt_vector(public, np.ones(3)))


def test_sum_of_ten_parties_through_the_public_context(keys):
    secret, public = keys
    rng = np.random.default_rng(0)
    updates = [rng.uniform(-64, 64, 6000) for _ in range(10)]  # two ciphertexts of 4096 slots each
    blobs = [ckks.vector_to_bytes(ckks.encrypt_vector(public, u)) for u in updates]
    total = ckks.sum_vectors(ckks.vector_from_bytes(b, public) for b in blobs)
    result = ckks.decrypt_vector(secret, ckks.vector_from_bytes(ckks.vector_to_bytes(total), secret))
    assert result.shape == (6000,)
    error = np.abs(result - sum(updates)).max()
    assert error < ckks.SUM_ERROR_BOUND
    assert error > 0  # approximate, as documented: CKKS never returns the exact sum


def test_linear_head_error_is_within_the_bound(keys):
    secret, public = keys
    rng = np.random.default_rng(1)
    embedding = rng.normal(size=512)
    embedding /= np.linalg.norm(embedding)
    weights = rng.normal(size=(10, 512)) / np.sqrt(512)
    bias = rng.normal(size=10)
    request = ckks.vector_from_bytes(ckks.vector_to_bytes(ckks.encrypt_vector(secret, embedding)), public)
    scores = ckks.decrypt_scores(secret, ckks.linear(request, weights, bias))
    assert np.abs(scores - (weights @ embedding + bias)).max() < ckks.DOT_ERROR_BOUND


def test_malformed_input_is_a_clear_error(keys):
    secret, public = keys
    data = ckks.vector_to_bytes(ckks.encrypt_vector(public, np.ones(10)))
    for cut in (0, 10, 25, len(data) // 2, len(data) - 1):
        with pytest.raises(CryptoError, match="truncated|malformed"):
            ckks.vector_from_bytes(data[:cut], secret)
    corrupted = data[:40] + bytes(len(data) - 40)
    with pytest.raises(CryptoError, match="malformed"):
        ckks.vector_from_bytes(corrupted, secret)
    with pytest.raises(CryptoError, match="CKKS context"):
        ckks.CkksKeys.from_bytes(b"garbage")
    with pytest.raises(CryptoError, match="lengths"):
        ckks.encrypt_vector(public, np.ones(3)) + ckks.encrypt_vector(public, np.ones(4))
    with pytest.raises(CryptoError, match="do not fit"):
        ckks.linear(ckks.encrypt_vector(public, np.ones(3)), np.ones((2, 4)))
    with pytest.raises(CryptoError, match="NaN"):
        ckks.encrypt_vector(public, np.array([np.nan]))
