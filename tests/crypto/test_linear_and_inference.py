import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simmim.crypto.encrypted_inference import InferenceClient, LinearHead, softmax, zero_shot_head
from simmim.crypto.linear import encrypted_linear, multi_power, quantise
from simmim.crypto.vector import decrypt_integers, encrypt_vector
from simmim.errors import CryptoError

MODULUS = gmpy2.mpz(2**607 - 1)


@settings(max_examples=60, deadline=None)
@given(exponents=st.lists(st.integers(0, 2**40), min_size=0, max_size=30), seed=st.integers(0, 2**32))
def test_multi_power_equals_the_product_of_powers(exponents, seed):
    rng = np.random.default_rng(seed)
    bases = [gmpy2.mpz(int(b)) for b in rng.integers(2, 2**62, size=len(exponents))]
    expected = gmpy2.mpz(1)
    for base, exponent in zip(bases, exponents):
        expected = expected * gmpy2.powmod(base, exponent, MODULUS) % MODULUS
    assert multi_power(bases, exponents, MODULUS) == expected


def test_encrypted_linear_is_exact_for_the_rounded_weights(keys_1024):
    public, private = keys_1024
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 64)
    weights, bias = rng.normal(size=(7, 64)), rng.normal(size=7)
    client = InferenceClient(private)
    encrypted = client.encrypt_embedding(x)
    scores = encrypted_linear(encrypted, weights, bias, weight_fraction_bits=12)
    x_q = client.codec.encode(x).astype(object)
    expected = quantise(weights, 12).astype(object) @ x_q + quantise(bias, 24 + 12).astype(object)
    assert decrypt_integers(private, scores).tolist() == expected.tolist()
    np.testing.assert_allclose(client.decrypt_scores(scores), weights @ x + bias, atol=64 * 2.0**-12)


def test_linear_head_refuses_packed_inputs_and_wrong_shapes(keys_512):
    public, private = keys_512
    packed = encrypt_vector(public, np.ones(8))
    with pytest.raises(CryptoError, match="packed=False"):
        encrypted_linear(packed, np.ones((2, 8)))
    unpacked = InferenceClient(private).encrypt_embedding(np.full(8, 0.5))
    with pytest.raises(CryptoError, match="do not match"):
        encrypted_linear(unpacked, np.ones((2, 9)))
    with pytest.raises(CryptoError, match="finite"):
        encrypted_linear(unpacked, np.full((2, 8), np.nan))
    with pytest.raises(CryptoError, match="2-D"):
        LinearHead(np.ones(8))
    with pytest.raises(CryptoError, match="outside"):
        InferenceClient(private).encrypt_embedding(np.full(8, 1.5))  # embeddings are normalised


def test_zero_shot_round_trip_over_bytes_at_2048_bits(keys_2048):
    public, private = keys_2048
    rng = np.random.default_rng(3)
    embedding = rng.normal(size=32)
    embedding /= np.linalg.norm(embedding)
    classes = rng.normal(size=(5, 32))
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    client = InferenceClient(private)
    request = client.request(embedding)
    assert len(request) > 32 * 512  # one 512-byte ciphertext per value
    response = zero_shot_head(classes, logit_scale=14.3).apply_bytes(request, public)
    scores = client.decrypt_scores(response)
    np.testing.assert_allclose(scores, 14.3 * classes @ embedding, atol=1e-3)
    np.testing.assert_allclose(softmax(scores), softmax(14.3 * classes @ embedding), atol=1e-4)
    assert softmax(scores).argmax() == (classes @ embedding).argmax()
