import math

import gmpy2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simmim.crypto.fixed_base import FixedBaseTable
from simmim.crypto.paillier import (
    RANDOMNESS_MODES,
    PrivateKey,
    PublicKey,
    generate_keypair,
    keypair_from_primes,
    randomness_exponent_bits,
    security_bits,
)
from simmim.crypto.primes import random_prime
from simmim.errors import CryptoError

FIXTURE_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("bits", [512, 1024])
def test_small_keys_have_exactly_the_requested_size(bits):
    public, private = generate_keypair(bits, allow_insecure=True)
    assert public.bits == bits
    assert private.p.bit_length() == private.q.bit_length() == bits // 2
    assert gmpy2.is_prime(private.p) and gmpy2.is_prime(private.q) and private.p != private.q
    # g = n + 1: g^m mod n^2 is the cheap 1 + m n.
    assert public.encode_plaintext(12345) == gmpy2.powmod(public.n + 1, 12345, public.n_square)
    assert private.decrypt(public.encrypt(1)) == 1


def test_2048_bit_key(keys_2048):
    public, private = keys_2048
    assert public.bits == 2048 and private.p * private.q == public.n
    assert security_bits(2048) == 112 and security_bits(3072) == 128


def test_3072_bit_key():
    public, private = generate_keypair(3072)
    assert public.bits == 3072 and private.p.bit_length() == private.q.bit_length() == 1536
    assert private.decrypt(private.encrypt(-7, "classic")) == -7


def test_insecure_sizes_are_refused_without_opt_in():
    with pytest.raises(CryptoError, match="not supported"):
        generate_keypair(1024)
    with pytest.raises(CryptoError, match="not supported"):
        generate_keypair(100, allow_insecure=True)


def test_random_primes_differ_and_have_two_top_bits():
    primes = {int(random_prime(128)) for _ in range(20)}
    assert len(primes) == 20
    assert all(p >> 126 == 0b11 and gmpy2.is_prime(p) for p in primes)


def test_exponent_sizes_per_mode():
    assert randomness_exponent_bits(2048, "djn") == 1024
    assert randomness_exponent_bits(3072, "djn") == 1536
    assert randomness_exponent_bits(2048, "djn-short") == 224
    assert randomness_exponent_bits(3072, "djn-short") == 256
    with pytest.raises(CryptoError, match="unknown randomness mode"):
        randomness_exponent_bits(2048, "fast")


@pytest.mark.parametrize("mode", RANDOMNESS_MODES)
def test_every_mode_and_key_holder_encryption_decrypt(keys_1024, mode):
    public, private = keys_1024
    for m in (0, 1, -1, 2**500, -(2**500), public.max_plaintext, -public.max_plaintext):
        c_public, c_private = public.encrypt(m, mode), private.encrypt(m, mode)
        assert private.decrypt(c_public) == m and private.decrypt(c_private) == m
        assert c_public != public.encrypt(m, mode)  # probabilistic


def test_plaintext_out_of_range_is_refused(keys_512):
    public, _ = keys_512
    with pytest.raises(CryptoError, match="does not fit"):
        public.encrypt(public.max_plaintext + 1)


def test_randomisers_are_nth_residues_of_the_right_group(keys_512):
    public, private = keys_512
    # An n-th residue R satisfies R^phi(n) = 1 mod n^2 (it lies in the subgroup of order phi(n)).
    phi = (private.p - 1) * (private.q - 1)
    for mode in RANDOMNESS_MODES:
        for r in (public.randomiser(mode), private.randomiser(mode)):
            assert gmpy2.powmod(r, phi, public.n_square) == 1


def test_key_holder_djn_randomiser_matches_the_public_computation(keys_512, monkeypatch):
    public, private = keys_512
    import secrets

    monkeypatch.setattr(secrets, "randbits", lambda bits: 2**bits - 12345)
    assert public.randomiser("djn") == private.randomiser("djn")
    assert public.randomiser("djn") == gmpy2.powmod(public.h_s, 2**256 - 12345, public.n_square)


def test_fixed_base_table_equals_powmod():
    modulus = gmpy2.mpz(2**521 - 1)
    table = FixedBaseTable(3, modulus, 200)
    for exponent in (0, 1, 255, 256, 2**200 - 1, 123456789 * 2**100):
        assert table.power(exponent) == gmpy2.powmod(3, exponent, modulus)
    with pytest.raises(ValueError):
        table.power(2**200)


@FIXTURE_SETTINGS
@given(a=st.integers(-(2**200), 2**200), b=st.integers(-(2**200), 2**200), k=st.integers(-(2**40), 2**40))
def test_homomorphic_operations(keys_512, a, b, k):
    public, private = keys_512
    ca, cb = public.encrypt(a), private.encrypt(b)
    assert private.decrypt(public.add(ca, cb)) == a + b
    assert private.decrypt(public.add_plain(ca, b)) == a + b
    assert private.decrypt(public.multiply(ca, k)) == a * k
    assert private.decrypt(public.negate(ca)) == -a
    fresh = public.rerandomise(ca)
    assert fresh != ca and private.decrypt(fresh) == a


def test_decrypt_many_matches_decrypt(keys_512):
    public, private = keys_512
    values = [-5, 0, 7, 2**100]
    assert private.decrypt_many([public.encrypt(v) for v in values]) == values


def test_invalid_ciphertexts_and_keys_are_refused(keys_512, keys_1024):
    public, private = keys_512
    for bad in (0, public.n_square, -3):
        with pytest.raises(CryptoError, match="not a ciphertext"):
            private.decrypt(bad)
    with pytest.raises(CryptoError, match="p \\* q"):
        PrivateKey(public_key=public, p=private.p, q=keys_1024[1].q)
    with pytest.raises(CryptoError, match="two distinct primes"):
        keypair_from_primes(private.p, private.p)
    with pytest.raises(CryptoError, match="two distinct primes"):
        keypair_from_primes(private.p, 91)


def test_imported_primes_give_a_working_key(keys_512):
    _, private = keys_512
    public, imported = keypair_from_primes(private.p, private.q)
    assert public.n == private.public_key.n and public.h_s != private.public_key.h_s
    assert imported.decrypt(private.public_key.encrypt(-42)) == -42  # h_s does not matter for decryption
    assert math.gcd(int(public.h_s), int(public.n)) == 1


def test_a_public_key_with_a_bad_randomiser_base_is_caught_by_the_key_holder(keys_512):
    public, private = keys_512
    bad = PublicKey(n=public.n, h_s=(public.n + 1) * public.h_s % public.n_square)  # h_s times g: adds 1
    assert private.decrypt(bad.encrypt(5)) != 5
    with pytest.raises(CryptoError, match="n-th residue"):
        PrivateKey(public_key=bad, p=private.p, q=private.q)
