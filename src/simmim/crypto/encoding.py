"""Fixed-point encoding of signed floats and packing of many encoded values into one plaintext.

Encoding: x -> round(x * 2^fraction_bits), an int64 with |x| <= max_abs enforced, so the
rounding error is at most 2^-(fraction_bits + 1).

Packing: k signed integers v_0..v_(k-1), each in a slot of w bits, become the one integer
P = sum v_i * 2^(w*i). Slots hold signed values directly (no offsets to track): unpacking
reads each w-bit chunk of P as signed and adds back the borrow that a negative lower slot
took from it. That is exact while every slot satisfies |v_i| <= 2^(w-1) - 1 (`capacity`),
which is why every vector carries a bound on its slot values and every homomorphic
operation checks the bound it would produce before doing anything (`vector`).

A layout is chosen for a declared number of additions: w = bits(max_additions * value_bound)
+ 1, and k = (key_bits - 1) // w slots fit a plaintext with |P| < n / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simmim.errors import CryptoError

MAX_PACKED_SLOT_BITS = 62  # slots are unpacked in int64 arithmetic


@dataclass(frozen=True)
class FixedPoint:
    """Signed fixed-point numbers with `fraction_bits` bits after the point and |x| <= max_abs.

    Attributes:
        fraction_bits: Precision: values are multiples of 2^-fraction_bits.
        max_abs: Largest magnitude accepted; larger inputs are refused, never clipped.
    """

    fraction_bits: int = 24
    max_abs: float = 256.0

    def __post_init__(self):
        if not 0 <= self.fraction_bits <= 52:
            raise CryptoError(f"fraction_bits must be in [0, 52], got {self.fraction_bits}")
        if not (math.isfinite(self.max_abs) and self.max_abs > 0):
            raise CryptoError(f"max_abs must be a positive number, got {self.max_abs}")
        if self.value_bound > 2**62:
            raise CryptoError("max_abs * 2^fraction_bits must stay below 2^62")

    @property
    def value_bound(self) -> int:
        """The largest |encoded value|."""
        return math.floor(self.max_abs * 2**self.fraction_bits)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """int64 array round(values * 2^fraction_bits); CryptoError for non-finite or too large values."""
        array = np.asarray(values)
        if array.dtype.kind in "iub":
            wide = array.astype(object) * (1 << self.fraction_bits)
            too_big = np.abs(wide) > self.value_bound if wide.size else np.zeros(0, bool)
            if too_big.any():
                raise CryptoError(f"value {array[too_big][0]} is outside [-{self.max_abs}, {self.max_abs}]; "
                                  "raise max_abs")
            return wide.astype(np.int64)
        if array.dtype.kind != "f":
            raise CryptoError(f"cannot encode values of dtype {array.dtype}; expected numbers")
        return scaled_fixed_point(array, self.fraction_bits, self.max_abs, self.value_bound).astype(np.int64)


def decode(encoded: np.ndarray, fraction_bits: int) -> np.ndarray:
    """Floats from fixed-point integers (int64 or Python ints) with `fraction_bits` after the point."""
    if encoded.dtype == object:
        return np.array([float(int(v) / (1 << fraction_bits)) for v in encoded], dtype=np.float64)
    return np.ldexp(encoded.astype(np.float64), -fraction_bits)


@dataclass(frozen=True)
class SlotLayout:
    """How values sit in plaintexts: `slots` values of `slot_bits` bits each (sign included).

    With one slot per plaintext the slot is the whole plaintext (`slot_bits` = key bits - 1),
    which linear layers need: multiplying a ciphertext by a scalar scales all its slots alike.
    """

    slot_bits: int
    slots: int

    def __post_init__(self):
        if self.slots < 1 or self.slot_bits < 2:
            raise CryptoError(f"invalid slot layout: {self.slots} slots of {self.slot_bits} bits")
        if self.slots > 1 and self.slot_bits > MAX_PACKED_SLOT_BITS:
            raise CryptoError(f"packed slots hold at most {MAX_PACKED_SLOT_BITS} bits, {self.slot_bits} needed: "
                              "lower fraction_bits, max_abs or max_additions, or encrypt unpacked")

    @classmethod
    def packed(cls, key_bits: int, value_bound: int, max_additions: int) -> SlotLayout:
        """The densest layout whose slots absorb `max_additions` values of magnitude `value_bound`."""
        if max_additions < 1:
            raise CryptoError(f"max_additions must be at least 1, got {max_additions}")
        slot_bits = (max_additions * max(value_bound, 1)).bit_length() + 1
        slots = (key_bits - 1) // slot_bits
        if slots >= 2 and slot_bits <= MAX_PACKED_SLOT_BITS:
            return cls(slot_bits=slot_bits, slots=slots)
        unpacked = cls.unpacked(key_bits)
        if slot_bits - 1 > unpacked.slot_bits - 1:
            raise CryptoError(f"{max_additions} additions of values up to {value_bound} do not fit a "
                              f"{key_bits}-bit plaintext")
        return unpacked

    @classmethod
    def unpacked(cls, key_bits: int) -> SlotLayout:
        return cls(slot_bits=key_bits - 1, slots=1)

    @property
    def capacity(self) -> int:
        """The largest |slot value| that unpacks exactly."""
        return 2 ** (self.slot_bits - 1) - 1

    def plaintext_count(self, length: int) -> int:
        return -(-length // self.slots)

    def pack(self, encoded: np.ndarray) -> list[int]:
        """Signed plaintext integers holding `encoded` (int64, |v| <= capacity), `slots` per integer."""
        values = np.asarray(encoded)
        if values.size and int(np.abs(values.astype(object)).max()) > self.capacity:
            raise CryptoError(f"a value does not fit a {self.slot_bits}-bit slot")
        if self.slots == 1:
            return [int(v) for v in values]
        count = self.plaintext_count(values.size)
        grid = np.zeros((count, self.slots), dtype=np.int64)
        grid.flat[: values.size] = values
        w = self.slot_bits
        # Two's complement w-bit chunks, most significant slot first, as big-endian bytes.
        unsigned = grid.astype(np.uint64) & np.uint64((1 << w) - 1)
        shifts = np.arange(w - 1, -1, -1, dtype=np.uint64)
        bits = ((unsigned[:, ::-1, None] >> shifts) & np.uint64(1)).astype(np.uint8).reshape(count, -1)
        pad = (-bits.shape[1]) % 8
        rows = np.packbits(np.pad(bits, ((0, 0), (pad, 0))), axis=1)
        negatives = np.packbits(np.pad(self._slot_flags(grid < 0), ((0, 0), (pad, 0))), axis=1)
        # P = sum (v_i mod 2^w) 2^(w i) - sum_(v_i < 0) 2^(w (i + 1)).
        return [int.from_bytes(row.tobytes(), "big") - (int.from_bytes(neg.tobytes(), "big") << w)
                for row, neg in zip(rows, negatives)]

    def _slot_flags(self, flags: np.ndarray) -> np.ndarray:
        """Bit strings with a 1 at the lowest bit of each flagged slot, most significant slot first."""
        count = flags.shape[0]
        bits = np.zeros((count, self.slots, self.slot_bits), dtype=np.uint8)
        bits[:, :, -1] = flags[:, ::-1]
        return bits.reshape(count, -1)

    def unpack(self, plaintexts: list[int], length: int) -> np.ndarray:
        """The first `length` slot values of signed plaintexts (int64, or Python ints when unpacked)."""
        if self.slots == 1:
            values = np.empty(len(plaintexts), dtype=object)
            values[:] = [int(m) for m in plaintexts]
            if all(abs(v) < 2**62 for v in values):
                values = values.astype(np.int64)
            return values[:length]
        w, total = self.slot_bits, self.slot_bits * self.slots
        size = (total + 7) // 8
        mask = (1 << total) - 1
        raw = np.frombuffer(b"".join((int(m) & mask).to_bytes(size, "big") for m in plaintexts), dtype=np.uint8)
        bits = np.unpackbits(raw.reshape(len(plaintexts), size), axis=1)[:, size * 8 - total:]
        chunks = bits.reshape(len(plaintexts), self.slots, w)[:, ::-1, :].astype(np.uint64)
        weights = np.uint64(1) << np.arange(w - 1, -1, -1, dtype=np.uint64)
        unsigned = (chunks * weights).sum(axis=2, dtype=np.uint64).astype(np.int64)
        signed = np.where(unsigned >= 1 << (w - 1), unsigned - (1 << w), unsigned)
        # A negative slot borrowed one from the slot above it: give it back.
        borrow = np.zeros_like(signed)
        borrow[:, 1:] = signed[:, :-1] < 0
        return (signed + borrow).reshape(-1)[:length]


def scaled_fixed_point(values: np.ndarray, fraction_bits: int, max_abs: float, value_bound: int) -> np.ndarray:
    """round(values * 2^fraction_bits) as float64 integers; CryptoError for a non-finite value or one
    whose encoding exceeds `value_bound` in magnitude (it lies outside [-max_abs, max_abs])."""
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise CryptoError("cannot encode NaN or infinite values")
    scaled = np.rint(np.ldexp(array, fraction_bits))
    too_big = np.abs(scaled) > value_bound
    if too_big.any():
        raise CryptoError(f"value {array[too_big][0]} is outside [-{max_abs}, {max_abs}]; clip it or raise max_abs")
    return scaled
