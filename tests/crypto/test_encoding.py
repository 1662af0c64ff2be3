import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simmim.crypto.encoding import MAX_PACKED_SLOT_BITS, FixedPoint, SlotLayout, decode
from simmim.errors import CryptoError


@st.composite
def layouts_and_values(draw):
    key_bits = draw(st.sampled_from([256, 512, 1024, 2048]))
    slot_bits = draw(st.integers(2, MAX_PACKED_SLOT_BITS))
    slots = draw(st.integers(1, (key_bits - 1) // slot_bits)) if (key_bits - 1) // slot_bits >= 2 else 1
    layout = SlotLayout(slot_bits=slot_bits, slots=slots) if slots > 1 else SlotLayout.unpacked(key_bits)
    cap = min(layout.capacity, 2**62)
    # Extremes matter most: the full capacity, zero and -1 next to negative neighbours.
    value = st.one_of(st.integers(-cap, cap), st.sampled_from([cap, -cap, 0, -1, 1]))
    values = draw(st.lists(value, min_size=1, max_size=3 * layout.slots + 1))
    return key_bits, layout, np.array(values, dtype=np.int64)


def signed_mod(plaintext: int, key_bits: int) -> int:
    """What a decryption returns: the plaintext mod n, read as signed, for the largest n of key_bits."""
    n = 2**key_bits - 1
    m = plaintext % n
    return m - n if m > n // 2 else m


@settings(max_examples=300, deadline=None)
@given(case=layouts_and_values())
def test_pack_unpack_round_trip(case):
    key_bits, layout, values = case
    plaintexts = layout.pack(values)
    assert len(plaintexts) == layout.plaintext_count(values.size)
    assert all(abs(p) < 2 ** (key_bits - 2) for p in plaintexts)  # fits (-n/2, n/2) for any n of key_bits
    unpacked = layout.unpack([signed_mod(p, key_bits) for p in plaintexts], values.size)
    assert [int(v) for v in unpacked] == values.tolist()


@settings(max_examples=200, deadline=None)
@given(case=layouts_and_values(), other=st.integers(0, 2**31), k=st.integers(-8, 8))
def test_packed_sums_and_scalings_are_slotwise(case, other, k):
    """Adding packed integers adds slot by slot, and multiplying scales every slot, while bounds hold."""
    key_bits, layout, values = case
    half = layout.capacity // 2 // max(abs(k), 1)
    a = np.clip(values, -half, half)
    b = np.clip(np.roll(values, 1) ^ other, -half, half)
    summed = [signed_mod(x + y, key_bits) for x, y in zip(layout.pack(a), layout.pack(b))]
    assert layout.unpack(summed, a.size).tolist() == (a.astype(object) + b).tolist()
    scaled = [signed_mod(x * k, key_bits) for x in layout.pack(a)]
    assert layout.unpack(scaled, a.size).tolist() == (a.astype(object) * k).tolist()


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=50),
       fraction_bits=st.integers(0, 40))
def test_fixed_point_round_trip_error_is_half_a_step(values, fraction_bits):
    codec = FixedPoint(fraction_bits=fraction_bits, max_abs=100.0)
    array = np.array(values)
    decoded = decode(codec.encode(array), fraction_bits)
    assert np.all(np.abs(decoded - array) <= 2.0 ** -(fraction_bits + 1))


def test_fixed_point_refuses_bad_values():
    codec = FixedPoint(fraction_bits=8, max_abs=2.0)
    for bad in ([np.nan], [np.inf], [-2.5], [3]):
        with pytest.raises(CryptoError):
            codec.encode(np.array(bad))
    with pytest.raises(CryptoError, match="dtype"):
        codec.encode(np.array(["a"]))
    assert codec.encode(np.array([2, -2])).tolist() == [512, -512]
    with pytest.raises(CryptoError, match="2\\^62"):
        FixedPoint(fraction_bits=40, max_abs=2.0**30)


def test_layout_for_declared_additions():
    layout = SlotLayout.packed(2048, value_bound=2**32, max_additions=1000)
    assert 1000 * 2**32 <= layout.capacity < 2 * 1000 * 2**32 * 2
    assert layout.slots * layout.slot_bits <= 2047 and (layout.slots + 1) * layout.slot_bits > 2047
    assert SlotLayout.packed(512, value_bound=2**60, max_additions=2**20).slots == 1  # too wide: unpacked
    with pytest.raises(CryptoError, match="max_additions"):
        SlotLayout.packed(2048, value_bound=10, max_additions=0)
    with pytest.raises(CryptoError, match="packed slots"):
        SlotLayout(slot_bits=70, slots=3)


def test_pack_refuses_values_beyond_capacity():
    layout = SlotLayout(slot_bits=8, slots=4)
    with pytest.raises(CryptoError, match="does not fit"):
        layout.pack(np.array([128]))
    assert layout.unpack(layout.pack(np.array([127, -127])), 2).tolist() == [127, -127]
