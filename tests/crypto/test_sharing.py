"""Additive and Shamir secret sharing, the fixed-point ring encoding and the PRG they draw from."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from simmim.crypto import additive, shamir
from simmim.crypto.additive import RingEncoding
from simmim.crypto.prg import SEED_BYTES, expand_seed, random_words
from simmim.errors import CryptoError

P = shamir.PRIME
field_elements = st.one_of(st.integers(0, P - 1), st.sampled_from([0, 1, 2, P - 1, P - 2, 2**32 - 1, 2**32, 2**60]))


def looks_uniform(data: np.ndarray) -> float:
    """p-value of a chi-square test that the bytes of `data` are uniform."""
    counts = np.bincount(np.ascontiguousarray(data).reshape(-1).view(np.uint8), minlength=256)
    return chisquare(counts).pvalue


# --- field arithmetic --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(field_elements, field_elements), min_size=1, max_size=50))
def test_field_multiplication_and_addition_match_python_integers(pairs):
    a = np.array([x for x, _ in pairs], dtype=np.uint64)
    b = np.array([y for _, y in pairs], dtype=np.uint64)
    assert [int(v) for v in shamir.mul(a, b)] == [x * y % P for x, y in pairs]
    assert [int(v) for v in shamir.add(a, b)] == [(x + y) % P for x, y in pairs]
    small = b & np.uint64(2**32 - 1)  # multipliers below 2^32: the evaluation-point fast path
    assert [int(v) for v in shamir.mul_small(a, small)] == [x * (y % 2**32) % P for x, y in pairs]


def test_random_elements_are_field_elements_and_vary():
    elements = shamir.random_elements(20_000)
    assert elements.dtype == np.uint64 and int(elements.max()) < P
    assert len(np.unique(elements)) == elements.size  # 61-bit values: a repeat is a 2^-32 event
    # The top 8 of the 61 bits are uniform.
    assert chisquare(np.bincount((elements >> np.uint64(53)).astype(np.int64), minlength=256)).pvalue > 1e-6


# --- Shamir ------------------------------------------------------------------------------------


@st.composite
def shamir_cases(draw):
    parties = draw(st.integers(1, 12))
    threshold = draw(st.integers(1, parties))
    xs = draw(st.lists(st.integers(1, P - 1), min_size=parties, max_size=parties, unique=True))
    secrets_ = draw(st.lists(field_elements, min_size=1, max_size=20))
    subset = draw(st.lists(st.integers(0, parties - 1), min_size=threshold, max_size=parties, unique=True))
    return threshold, xs, np.array(secrets_, dtype=np.uint64), subset


@settings(max_examples=150, deadline=None)
@given(shamir_cases())
def test_shamir_any_threshold_shares_recover_the_secrets(case):
    threshold, xs, secrets_, subset = case
    shares = shamir.split(secrets_, threshold, xs)
    assert shares.shape == (len(xs), secrets_.size)
    recovered = shamir.recover([xs[i] for i in subset], shares[subset], threshold)
    assert np.array_equal(recovered, secrets_)


@settings(max_examples=100, deadline=None)
@given(shamir_cases(), st.data())
def test_shamir_is_linear(case, data):
    threshold, xs, first, subset = case
    second = np.array(data.draw(st.lists(field_elements, min_size=first.size, max_size=first.size)), np.uint64)
    summed_shares = shamir.add(shamir.split(first, threshold, xs), shamir.split(second, threshold, xs))
    recovered = shamir.recover([xs[i] for i in subset], summed_shares[subset], threshold)
    assert [int(v) for v in recovered] == [(int(a) + int(b)) % P for a, b in zip(first, second)]


def test_shamir_keeps_the_shape_of_the_secrets():
    secrets_ = shamir.random_elements(24).reshape(2, 3, 4)
    shares = shamir.split(secrets_, 3, [5, 6, 7, 8])
    assert shares.shape == (4, 2, 3, 4)
    assert np.array_equal(shamir.recover([8, 5, 7], shares[[3, 0, 2]], 3), secrets_)


def test_shamir_fewer_than_threshold_shares_are_refused():
    shares = shamir.split(np.arange(10, dtype=np.uint64), 4, range(1, 8))
    with pytest.raises(CryptoError, match="cannot recover"):
        shamir.recover([1, 2, 3], shares[:3], 4)


def test_shamir_shares_below_threshold_are_uniform_whatever_the_secret():
    # Two shares of a threshold-3 sharing of all-zero secrets look like uniform 61-bit numbers.
    shares = shamir.split(np.zeros(50_000, dtype=np.uint64), 3, [1, 2, 3])[:2]
    for share in shares:
        assert chisquare(np.bincount((share >> np.uint64(53)).astype(np.int64), minlength=256)).pvalue > 1e-6


def test_shamir_extra_shares_catch_a_corrupted_share():
    xs = list(range(1, 8))
    shares = shamir.split(shamir.random_elements(6), 4, xs)
    shares[5, 2] = (shares[5, 2] + np.uint64(1)) % np.uint64(P)
    with pytest.raises(CryptoError, match="x=6 does not match"):
        shamir.recover(xs, shares, 4)
    other = shamir.split(shamir.random_elements(6), 4, xs)  # a share of another secret
    with pytest.raises(CryptoError, match="does not match"):
        shamir.recover(xs[:5], np.concatenate([shares[:4], other[4:5]]), 4)


@pytest.mark.parametrize("threshold, xs, secrets_, message", [
    (0, [1, 2], [1], "threshold"),
    (3, [1, 2], [1], "threshold"),
    (2, [1, 1, 2], [1], "distinct"),
    (2, [0, 1, 2], [1], r"\[1, 2\^61 - 2\]"),
    (2, [1, 2, P], [1], r"\[1, 2\^61 - 2\]"),
    (2, [1, 2, 3], [P], "not below p"),
    (2, [1, 2, 3], [-1], r"\[0, p\)"),
    (2, [1, 2, 3], [0.5], "integers"),
])
def test_shamir_split_refuses_bad_arguments(threshold, xs, secrets_, message):
    with pytest.raises(CryptoError, match=message):
        shamir.split(np.array(secrets_), threshold, xs)


def test_shamir_recover_refuses_mismatched_points_and_shares():
    shares = shamir.split(np.arange(3, dtype=np.uint64), 2, [1, 2, 3])
    with pytest.raises(CryptoError, match="points"):
        shamir.recover([1, 2, 3], shares[:2], 2)
    with pytest.raises(CryptoError, match="not below p"):
        shamir.recover([1, 2], np.full((2, 3), P, dtype=np.uint64), 2)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=100))
def test_bytes_survive_a_round_trip_through_field_elements(data):
    elements = shamir.bytes_to_elements(data)
    assert elements.size == -(-len(data) // 7) and int(elements.max(initial=0)) < 2**56
    assert shamir.elements_to_bytes(elements, len(data)) == data


def test_elements_that_hold_no_byte_string_are_refused():
    with pytest.raises(CryptoError, match="expected length"):
        shamir.elements_to_bytes(np.array([2**56], dtype=np.uint64), 7)
    with pytest.raises(CryptoError, match="expected length"):
        shamir.elements_to_bytes(np.array([1 << 48], dtype=np.uint64), 5)  # a nonzero byte past the end
    with pytest.raises(CryptoError, match="expected length"):
        shamir.elements_to_bytes(np.array([1], dtype=np.uint64), 8)


def test_a_32_byte_seed_survives_sharing():
    seed = bytes(range(SEED_BYTES))
    shares = shamir.split(shamir.bytes_to_elements(seed), 3, [10, 20, 30, 40])
    assert shamir.elements_to_bytes(shamir.recover([40, 10, 30], shares[[3, 0, 2]], 3), SEED_BYTES) == seed


# --- additive sharing and the ring encoding ----------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([32, 64]), st.integers(2, 8), st.data())
def test_additive_shares_reconstruct_and_are_linear(word_bits, parties, data):
    top = 2**word_bits - 1
    length = data.draw(st.integers(1, 30))
    words = st.lists(st.one_of(st.integers(0, top), st.sampled_from([0, 1, top])), min_size=length, max_size=length)
    dtype = np.uint32 if word_bits == 32 else np.uint64
    a, b = np.array(data.draw(words), dtype=dtype), np.array(data.draw(words), dtype=dtype)
    shares_a, shares_b = additive.share(a, parties, word_bits), additive.share(b, parties, word_bits)
    assert shares_a.shape == (parties, length) and shares_a.dtype.itemsize * 8 == word_bits
    assert np.array_equal(additive.reconstruct(shares_a, word_bits), a)
    assert [int(v) for v in additive.reconstruct(shares_a + shares_b, word_bits)] == [
        (int(x) + int(y)) % 2**word_bits for x, y in zip(a, b)]


def test_any_n_minus_1_additive_shares_look_uniform():
    shares = additive.share(np.zeros(100_000, dtype=np.uint32), 3)
    for kept in ([0, 1], [1, 2], [0, 2]):
        assert looks_uniform(shares[kept]) > 1e-6


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([32, 64]), st.integers(0, 20), st.data())
def test_ring_encoding_round_trips_and_sums(word_bits, fraction_bits, data):
    encoding = RingEncoding(word_bits=word_bits, fraction_bits=fraction_bits, max_abs=100.0)
    values = np.array(data.draw(st.lists(st.floats(-100, 100), min_size=1, max_size=20)))
    words = encoding.encode(values)
    assert words.dtype == encoding.dtype
    assert np.abs(encoding.decode(words) - values).max() <= 2.0 ** -(fraction_bits + 1)
    # A sum of encodings decodes to the sum of the rounded values, shared or not.
    rounded = encoding.decode(words)
    summed = additive.reconstruct(additive.share(words, 3, word_bits) + additive.share(words, 3, word_bits), word_bits)
    assert np.array_equal(encoding.decode(summed), 2 * rounded)


def test_ring_encoding_wraps_negative_values_as_twos_complement():
    encoding = RingEncoding(word_bits=32, fraction_bits=4, max_abs=8.0)
    assert encoding.encode(np.array([-1.0, 0.5, 8.0])).tolist() == [2**32 - 16, 8, 128]
    assert encoding.max_summands == (2**31 - 1) // 128
    assert encoding.decode(np.array([2**32 - 16], dtype=np.uint32)).tolist() == [-1.0]


def test_ring_encoding_refuses_what_it_cannot_represent():
    encoding = RingEncoding(word_bits=32, fraction_bits=16, max_abs=2.0)
    with pytest.raises(CryptoError, match="outside"):
        encoding.encode(np.array([2.1]))
    with pytest.raises(CryptoError, match="NaN"):
        encoding.encode(np.array([np.nan]))
    with pytest.raises(CryptoError, match="dtype"):
        encoding.encode(np.array(["1"]))
    with pytest.raises(CryptoError, match="32-bit unsigned"):
        encoding.decode(np.array([1], dtype=np.int32))
    assert encoding.clip(np.array([-5.0, 0.25, 5.0])).tolist() == [-2.0, 0.25, 2.0]
    for bad in (dict(word_bits=16), dict(fraction_bits=31), dict(max_abs=2.0**16, fraction_bits=16),
                dict(max_abs=float("inf")), dict(max_abs=2.0**-20, fraction_bits=4)):
        with pytest.raises(CryptoError):
            RingEncoding(**bad)


def test_additive_sharing_refuses_bad_arguments():
    with pytest.raises(CryptoError, match="at least 2"):
        additive.share(np.zeros(3, np.uint32), 1)
    with pytest.raises(CryptoError, match="32-bit unsigned"):
        additive.share(np.zeros(3, np.int32), 2)
    with pytest.raises(CryptoError, match="64-bit unsigned"):
        additive.reconstruct(np.zeros((2, 3), np.uint32), 64)


# --- PRG ---------------------------------------------------------------------------------------


def test_seed_expansion_is_deterministic_and_seed_dependent():
    seed = bytes(range(32))
    first, again = expand_seed(seed, 1000), expand_seed(seed, 1000)
    assert np.array_equal(first, again) and first.flags.writeable
    assert np.array_equal(expand_seed(seed, 10), first[:10])  # a prefix of the same keystream
    assert not np.array_equal(expand_seed(bytes(31) + b"\x01", 1000), first)
    # 64-bit words are the same keystream read in 8-byte pieces.
    assert expand_seed(seed, 500, 64).tobytes() == first.tobytes()
    assert looks_uniform(expand_seed(seed, 100_000)) > 1e-6


def test_prg_refuses_bad_seeds_and_sizes():
    for seed in (b"short", bytes(33), "x" * 32):
        with pytest.raises(CryptoError, match="32 bytes"):
            expand_seed(seed, 4)
    with pytest.raises(CryptoError, match="32 or 64"):
        random_words(4, 16)
    with pytest.raises(CryptoError, match="words"):
        expand_seed(bytes(32), -1)
