"""Encrypted embeddings under BGN: the fixed-point bit budget, inner products and squared distances."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simmim.crypto.bgn import generate_keypair
from simmim.crypto.bgn_vectors import GALLERY, ProductEncoding, decrypt_score, encrypt_embedding, encrypted_score, match
from simmim.errors import CryptoError

ENCODING = ProductEncoding(fraction_bits=10, max_norm=1.0, window_bits=23)  # distances need 2*10 + 2 + slack


@pytest.fixture(scope="module")
def keys():
    return generate_keypair()


def unit_or_shorter(values: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(values)
    return values / norm if norm > 1 else values


def rounding_bound(x: np.ndarray, y: np.ndarray, s: int, factor: float = 1.0) -> float:
    """Worst case of |score(rounded) - score(exact)| for an inner product, times `factor`."""
    return factor * (2.0 ** -(s + 1) * (np.abs(x).sum() + np.abs(y).sum()) + x.size * 2.0 ** -(2 * s + 2)) + 1e-12


VECTORS = st.integers(1, 6).flatmap(lambda d: st.tuples(
    arrays(np.float64, d, elements=st.floats(-1, 1)), arrays(np.float64, d, elements=st.floats(-1, 1))))


@given(pair=VECTORS)
@settings(max_examples=20, deadline=None)
def test_encrypted_scores_match_plaintext_within_the_rounding_bound(keys, pair):
    public, private = keys
    x, y = (unit_or_shorter(v) for v in pair)
    query = encrypt_embedding(public, x, encoding=ENCODING)
    item = encrypt_embedding(public, y, side=GALLERY, encoding=ENCODING)
    s = ENCODING.fraction_bits
    inner = decrypt_score(private, encrypted_score(query, item))
    assert abs(inner - x @ y) <= rounding_bound(x, y, s)
    distance = decrypt_score(private, encrypted_score(query, item, "squared-distance"))
    # ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y>: each of the three terms rounds like an inner product.
    assert abs(distance - np.sum((x - y) ** 2)) <= rounding_bound(x, y, s, factor=4.0)


def test_match_scores_a_query_against_a_gallery(keys):
    public, private = keys
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(3, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[1] + 0.1 * rng.normal(size=8)
    query /= np.linalg.norm(query)
    encrypted_query = encrypt_embedding(public, query, encoding=ENCODING)
    items = [encrypt_embedding(public, row, side=GALLERY, encoding=ENCODING) for row in gallery]
    scores = [decrypt_score(private, s) for s in match(encrypted_query, items)]
    np.testing.assert_allclose(scores, gallery @ query, atol=2e-3)
    assert int(np.argmax(scores)) == 1


def test_the_bit_budget_is_enforced_before_any_work():
    ProductEncoding(fraction_bits=15, window_bits=31).check_budget("inner-product")
    with pytest.raises(CryptoError, match=r"2s \+ log2 max\|result\| <= w"):
        ProductEncoding(fraction_bits=15, window_bits=31).check_budget("squared-distance")
    ProductEncoding(fraction_bits=14, window_bits=31).check_budget("squared-distance")
    ProductEncoding(fraction_bits=15, window_bits=33).check_budget("squared-distance")
    with pytest.raises(CryptoError, match="needs|need"):
        ProductEncoding(fraction_bits=15, max_norm=2.0, window_bits=31).check_budget("inner-product")
    with pytest.raises(CryptoError, match="unknown metric"):
        ProductEncoding().check_budget("cosine")


def test_scores_refuse_an_encoding_whose_results_can_leave_the_window(keys):
    public, _ = keys
    tight = ProductEncoding(fraction_bits=10, window_bits=20)
    query = encrypt_embedding(public, np.ones(2) / 2, encoding=tight)
    item = encrypt_embedding(public, np.ones(2) / 2, side=GALLERY, encoding=tight)
    with pytest.raises(CryptoError, match="window has 20"):
        encrypted_score(query, item)


@pytest.mark.parametrize("values,message", [
    (np.ones(4), "exceeds max_norm"), (np.array([0.5, np.nan]), "NaN"), (np.ones((2, 2)) / 4, "1-D"),
    (np.array([]), "non-empty"), (np.array([2.0]), "outside"),
])
def test_encoding_refuses_bad_vectors(keys, values, message):
    with pytest.raises(CryptoError, match=message):
        encrypt_embedding(keys[0], values, encoding=ENCODING)


@pytest.mark.parametrize("kwargs", [{"fraction_bits": 27}, {"window_bits": 47}, {"max_norm": 0.0},
                                    {"max_norm": float("inf")}])
def test_encoding_parameters_are_validated(kwargs):
    with pytest.raises(CryptoError):
        ProductEncoding(**kwargs)


def test_mismatched_operands_are_refused(keys):
    public, _ = keys
    other_public, _ = generate_keypair()
    x = np.array([0.6, 0.8])
    query = encrypt_embedding(public, x, encoding=ENCODING)
    item = encrypt_embedding(public, x, side=GALLERY, encoding=ENCODING)
    with pytest.raises(CryptoError, match="in that order"):
        encrypted_score(item, query)
    with pytest.raises(CryptoError, match="do not match"):
        encrypted_score(query, encrypt_embedding(other_public, x, side=GALLERY, encoding=ENCODING))
    with pytest.raises(CryptoError, match="do not match"):
        encrypted_score(query, encrypt_embedding(public, np.array([1.0]), side=GALLERY, encoding=ENCODING))
    with pytest.raises(CryptoError, match="do not match"):
        encrypted_score(query, encrypt_embedding(public, x, side=GALLERY,
                                                 encoding=ProductEncoding(fraction_bits=9, window_bits=23)))
    with pytest.raises(CryptoError, match="side must be"):
        encrypt_embedding(public, x, side="server", encoding=ENCODING)
