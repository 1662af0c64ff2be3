"""BGN scheme: round trips, homomorphic operations, products, re-randomisation, decryption windows."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simmim.crypto.bgn import Ciphertext, PrivateKey, ProductCiphertext, generate_keypair, inner_product, multiply
from simmim.crypto.bgn_dlog import discrete_log, gt_generator
from simmim.crypto.pairing import G1, G1_GENERATOR, G2, G2_GENERATOR, GT, ORDER, pairing, pairing_product
from simmim.errors import CryptoError

SMALL = st.integers(-(2**12), 2**12)
WINDOW = 2**27  # holds every result below: products of SMALL values, sums of a few, scaled by up to 1000
FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair()


def encrypt(public, m: int, group: type) -> Ciphertext:
    return public.encrypt_g1(m) if group is G1 else public.encrypt_g2(m)


@FAST
@given(m=st.integers(-(2**20), 2**20), group=st.sampled_from([G1, G2]))
def test_level_one_round_trip(keys, m, group):
    public, private = keys
    c = encrypt(public, m, group)
    assert c.group is group
    assert private.decrypt(c, bound=2**20) == m


@FAST
@given(a=SMALL, b=SMALL, k=st.integers(-1000, 1000), group=st.sampled_from([G1, G2]))
def test_level_one_addition_and_public_scaling(keys, a, b, k, group):
    public, private = keys
    ca, cb = encrypt(public, a, group), encrypt(public, b, group)
    assert private.decrypt(ca + cb, bound=WINDOW) == a + b
    assert private.decrypt(ca - cb, bound=WINDOW) == a - b
    assert private.decrypt(-ca, bound=WINDOW) == -a
    assert private.decrypt(ca.scale(k), bound=WINDOW) == k * a


@FAST
@given(a=SMALL, b=SMALL)
def test_product_of_two_ciphertexts(keys, a, b):
    public, private = keys
    assert private.decrypt(multiply(public.encrypt_g1(a), public.encrypt_g2(b), public), bound=WINDOW) == a * b


@FAST
@given(pairs=st.lists(st.tuples(SMALL, SMALL), min_size=1, max_size=5),
       extra_left=st.lists(SMALL, max_size=2), extra_right=st.lists(SMALL, max_size=2))
def test_inner_product_with_added_level_one_terms(keys, pairs, extra_left, extra_right):
    public, private = keys
    result = inner_product([public.encrypt_g1(a) for a, _ in pairs], [public.encrypt_g2(b) for _, b in pairs], public,
                           plus_left=[public.encrypt_g1(v) for v in extra_left],
                           plus_right=[public.encrypt_g2(v) for v in extra_right])
    expected = sum(a * b for a, b in pairs) + sum(extra_left) + sum(extra_right)
    assert private.decrypt(result, bound=WINDOW) == expected


@FAST
@given(a=SMALL, b=SMALL, c=SMALL, k=st.integers(-7, 7))
def test_products_add_subtract_negate_and_scale_in_gt(keys, a, b, c, k):
    public, private = keys
    ab = multiply(public.encrypt_g1(a), public.encrypt_g2(b), public)
    ac = multiply(public.encrypt_g1(a), public.encrypt_g2(c), public)
    assert private.decrypt(ab + ac, bound=WINDOW) == a * b + a * c
    assert private.decrypt(ab - ac, bound=WINDOW) == a * b - a * c
    assert private.decrypt(-ab, bound=WINDOW) == -a * b
    assert private.decrypt(ab.scale(k), bound=WINDOW) == k * a * b


def test_rerandomisation_changes_every_part_but_not_the_plaintext(keys):
    public, private = keys
    product = multiply(public.encrypt_g1(3), public.encrypt_g2(-4), public)
    for c in (public.encrypt_g1(-5), public.encrypt_g2(9), product):
        fresh = public.rerandomise(c)
        parts = (c.s, c.t) if isinstance(c, Ciphertext) else c.parts
        fresh_parts = (fresh.s, fresh.t) if isinstance(fresh, Ciphertext) else fresh.parts
        assert all(a != b for a, b in zip(parts, fresh_parts))
        assert private.decrypt(fresh, bound=100) == private.decrypt(c, bound=100)


def test_products_are_rerandomised_unless_asked_not_to_be(keys):
    """Without re-randomisation the result is a function of the inputs; with it, fresh every time."""
    public, private = keys
    left, right = [public.encrypt_g1(2), public.encrypt_g1(3)], [public.encrypt_g2(5), public.encrypt_g2(7)]
    plain = [inner_product(left, right, public, rerandomise=False) for _ in range(2)]
    fresh = [inner_product(left, right, public) for _ in range(2)]
    assert plain[0].parts == plain[1].parts
    assert fresh[0].parts != fresh[1].parts and fresh[0].parts != plain[0].parts
    assert {private.decrypt(c, bound=100) for c in plain + fresh} == {31}


@pytest.mark.parametrize("bound,table_bits", [(0, 4), (1, 1), (1000, 5), (1000, None), (2**20, 8)])
def test_window_edges_decrypt_and_one_beyond_is_refused(keys, bound, table_bits):
    public, private = keys
    for m in {-bound, -1 if bound else 0, 0, bound}:
        assert private.decrypt(public.encrypt_g1(m), bound=bound, table_bits=table_bits) == m
    for m in (bound + 1, -bound - 1, 10 * bound + 7):
        with pytest.raises(CryptoError, match="outside the window"):
            private.decrypt(public.encrypt_g1(m), bound=bound, table_bits=table_bits)


def test_results_far_outside_the_window_are_refused_not_wrapped(keys):
    public, private = keys
    big = multiply(public.encrypt_g1(2**12), public.encrypt_g2(-(2**12)), public)
    with pytest.raises(CryptoError, match="widen the window"):
        private.decrypt(big, bound=2**20, table_bits=10)
    assert private.decrypt(big, bound=2**25, table_bits=14) == -(2**24)


def test_plus_and_minus_two_to_the_31_decrypt(keys):
    public, private = keys
    for m in (2**31, -(2**31), 2**31 - 12345):
        g_m = private.decrypt_to_gt(public.encrypt_g1(m))
        assert discrete_log(g_m, 2**31, table_bits=16) == m


@given(m=st.integers(-500, 500), bound=st.integers(0, 600), table_bits=st.integers(1, 10))
@settings(max_examples=60, deadline=None)
def test_discrete_log_finds_every_value_in_window_and_nothing_outside(m, bound, table_bits):
    target = gt_generator() ** m
    if abs(m) <= bound:
        assert discrete_log(target, bound, table_bits) == m
    else:
        with pytest.raises(CryptoError):
            discrete_log(target, bound, table_bits)


def test_operands_are_checked(keys):
    public, _ = keys
    a, b = public.encrypt_g1(1), public.encrypt_g2(1)
    with pytest.raises(CryptoError, match="G1 ciphertexts"):
        inner_product([b], [b], public)
    with pytest.raises(CryptoError, match="G2 ciphertexts"):
        multiply(a, a, public)
    with pytest.raises(CryptoError, match="equal length"):
        inner_product([a, a], [b], public)
    with pytest.raises(CryptoError, match="non-empty"):
        inner_product([], [], public)
    with pytest.raises(CryptoError, match="cannot combine"):
        a + b
    with pytest.raises(CryptoError, match="same group"):
        Ciphertext(a.s, b.t)
    with pytest.raises(CryptoError, match="four GT"):
        ProductCiphertext((GT.one(),) * 3)
    with pytest.raises(CryptoError, match="non-negative"):
        discrete_log(GT.one(), -1)


def test_pairing_product_equals_the_product_of_pairings_and_is_bilinear():
    left = [G1_GENERATOR.times(k) for k in (3, 5, 7)]
    right = [G2_GENERATOR.times(k) for k in (11, 13, 17)]
    expected = GT.one()
    for a, b in zip(left, right):
        expected = expected * pairing(a, b)
    assert pairing_product(left, right) == expected == gt_generator() ** (3 * 11 + 5 * 13 + 7 * 17)
    assert pairing_product([], []).is_one()
    # Identity points (a loaded blob may hold them) contribute e(0, Q) = e(P, 0) = 1.
    assert pairing_product([G1(), G1_GENERATOR], [G2_GENERATOR, G2()]).is_one()
    assert pairing_product([*left, G1()], [*right, G2_GENERATOR]) == expected
    assert (gt_generator() ** ORDER).is_one()
    with pytest.raises(CryptoError):
        pairing_product(left, right[:2])


def test_private_key_must_match_the_public_key(keys):
    public, private = keys
    with pytest.raises(CryptoError, match="does not match"):
        PrivateKey(public_key=public, x=private.y, y=private.x)
    with pytest.raises(CryptoError, match=r"\[1, r\)"):
        PrivateKey(public_key=public, x=0, y=private.y)


def test_fresh_encryptions_of_one_value_differ(keys):
    public, _ = keys
    assert public.encrypt_g1(42).s != public.encrypt_g1(42).s
    assert public.encrypt_g2(42).t != public.encrypt_g2(42).t
