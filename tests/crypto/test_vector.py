import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simmim.crypto.encoding import FixedPoint
from simmim.crypto.vector import decrypt_integers, decrypt_vector, encrypt_vector, sum_vectors
from simmim.errors import CryptoError

FIXTURE_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CODEC = FixedPoint(fraction_bits=20, max_abs=8.0)
STEP = 2.0**-21  # rounding error of one encoded value


def float_vectors(size=st.integers(1, 120)):
    return size.flatmap(lambda n: arrays(np.float64, n, elements=st.floats(-8, 8, allow_nan=False)))


@FIXTURE_SETTINGS
@given(x=float_vectors(), packed=st.booleans())
def test_encrypt_decrypt_round_trip(keys_512, x, packed):
    public, private = keys_512
    vector = encrypt_vector(public, x, codec=CODEC, packed=packed)
    assert len(vector) == x.size
    np.testing.assert_allclose(decrypt_vector(private, vector), x, rtol=0, atol=STEP)


@FIXTURE_SETTINGS
@given(data=st.data(), parties=st.integers(1, 6), k=st.integers(-3, 3))
def test_sums_and_scalings_are_exact_on_the_encoded_values(keys_512, data, parties, k):
    public, private = keys_512
    size = data.draw(st.integers(1, 60))
    xs = [data.draw(arrays(np.float64, size, elements=st.floats(-8, 8, allow_nan=False))) for _ in range(parties)]
    vectors = [encrypt_vector(public, x, codec=CODEC, max_additions=parties * max(abs(k), 1)) for x in xs]
    encoded = sum(CODEC.encode(x).astype(object) for x in xs)
    total = sum_vectors(vectors)
    assert decrypt_integers(private, total).tolist() == encoded.tolist()
    assert decrypt_integers(private, total * k).tolist() == (encoded * k).tolist()
    assert decrypt_integers(private, -total).tolist() == (-encoded).tolist()
    assert decrypt_integers(private, sum(vectors)).tolist() == encoded.tolist()  # Python's sum, pairwise


def test_worst_case_inputs_fill_slots_to_capacity_and_one_more_is_refused(keys_1024):
    public, private = keys_1024
    extremes = np.array([8.0, -8.0, 8.0, 0.0, -8.0, -2.0**-20] * 20)
    first = encrypt_vector(public, extremes, codec=CODEC, max_additions=5)
    allowed = first.layout.capacity // CODEC.value_bound  # at least the 5 declared, up to twice that
    assert 5 <= allowed < 10 and first.headroom == allowed - 1
    vectors = [first] + [encrypt_vector(public, extremes, codec=CODEC, max_additions=5) for _ in range(allowed - 1)]
    total = sum_vectors(vectors)  # every slot at its largest possible magnitude
    np.testing.assert_array_equal(decrypt_vector(private, total), allowed * extremes)
    with pytest.raises(CryptoError, match="could overflow"):
        total + first
    with pytest.raises(CryptoError, match="could overflow"):
        sum_vectors(vectors + [first])
    with pytest.raises(CryptoError, match="could overflow"):
        first * (allowed + 1)
    with pytest.raises(CryptoError, match="could overflow"):
        first.scale(0.5)  # scaling by 2^15 needs that much headroom
    np.testing.assert_array_equal(decrypt_vector(private, first * -allowed), -allowed * extremes)


def test_add_plain_subtract_and_scale(keys_1024):
    public, private = keys_1024
    x = np.linspace(-4, 4, 50)
    vector = encrypt_vector(private, x, codec=CODEC, max_additions=2**16)
    np.testing.assert_allclose(decrypt_vector(private, vector + 1.5), x + 1.5, atol=2 * STEP)
    np.testing.assert_allclose(decrypt_vector(private, vector - x[::-1]), x - x[::-1], atol=2 * STEP)
    np.testing.assert_allclose(decrypt_vector(private, vector - vector), 0.0, atol=0)
    np.testing.assert_allclose(decrypt_vector(private, vector.scale(-0.25, fraction_bits=8)), -0.25 * x, atol=STEP)
    with pytest.raises(CryptoError, match="different fixed-point scales"):
        vector + vector.scale(1.0, fraction_bits=2)
    with pytest.raises(CryptoError, match="cannot scale"):
        vector.scale(float("nan"))


def test_rerandomise_keeps_values_and_changes_ciphertexts(keys_1024):
    public, private = keys_1024
    x = np.arange(-8, 8, dtype=np.float64)
    vector = encrypt_vector(public, x, codec=CODEC)
    for mode in ("djn", "djn-short", "classic"):
        fresh = vector.rerandomise(mode)
        assert set(fresh.ciphertexts).isdisjoint(vector.ciphertexts)
        np.testing.assert_array_equal(decrypt_vector(private, fresh), x)


def test_mismatched_vectors_are_refused(keys_512, keys_1024):
    x = np.ones(10)
    a = encrypt_vector(keys_512[0], x, codec=CODEC, max_additions=4)
    with pytest.raises(CryptoError, match="different keys"):
        a + encrypt_vector(keys_1024[0], x, codec=CODEC, max_additions=4)
    with pytest.raises(CryptoError, match="shapes or layouts"):
        a + encrypt_vector(keys_512[0], np.ones(11), codec=CODEC, max_additions=4)
    with pytest.raises(CryptoError, match="does not match"):
        decrypt_vector(keys_1024[1], a)
    with pytest.raises(CryptoError, match="nothing to sum"):
        sum_vectors([])


def test_bad_inputs_are_refused(keys_512):
    public, _ = keys_512
    for bad, message in ((np.array([1.0, np.nan]), "NaN"), (np.array([9.0]), "outside"), (np.zeros((2, 2)), "1-D"),
                         (np.array([]), "empty")):
        with pytest.raises(CryptoError, match=message):
            encrypt_vector(public, bad, codec=CODEC)
    with pytest.raises(CryptoError, match="randomness mode"):
        encrypt_vector(public, np.ones(3), codec=CODEC, mode="fast")


def test_two_worker_processes_give_the_same_values(keys_512):
    public, private = keys_512
    x = np.random.default_rng(0).uniform(-8, 8, 3000)
    vector = encrypt_vector(public, x, codec=CODEC, packed=False, workers=2)
    np.testing.assert_allclose(decrypt_vector(private, vector, workers=2), x, atol=STEP)


def test_packing_is_dense_at_2048_bits(keys_2048):
    public, private = keys_2048
    x = np.random.default_rng(1).normal(size=1000)
    vector = encrypt_vector(public, x, max_additions=1024)  # default codec: 24 fraction bits, |x| <= 256
    # |x| <= 256 inclusive is 2^32 at 24 fraction bits (33 bits), times 2^10, plus the sign.
    assert vector.layout.slot_bits == 33 + 10 + 1 and vector.layout.slots == 2047 // 44 == 46
    assert len(vector.ciphertexts) == 22
    np.testing.assert_allclose(decrypt_vector(private, vector), x, atol=2.0**-25)
