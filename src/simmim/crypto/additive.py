"""Additive secret sharing over the ring Z_(2^k), k = 32 or 64, with signed fixed-point encoding.

Encoding (`RingEncoding`): a float x becomes round(x * 2^fraction_bits) in two's complement mod 2^k;
decoding reads a word as signed and divides. Sums of encodings are encodings of sums, exact as long as
the true sum stays inside the signed range: `RingEncoding.max_abs_sum` states that range, and
`encode` refuses inputs outside [-max_abs, max_abs] rather than let them wrap.

Sharing (`share`): a vector of words w becomes n vectors of words; n - 1 of them are uniform (OS-CSPRNG
seeded, see `prg`) and the last is w minus their sum, so any n - 1 shares are jointly uniform and
independent of w (perfect secrecy against n - 1 colluding holders), and `reconstruct` (the sum of all n)
gives w back exactly. Sharing is linear: the sum of two sharings is a sharing of the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simmim.crypto.encoding import scaled_fixed_point
from simmim.crypto.prg import random_words, word_dtype
from simmim.errors import CryptoError


@dataclass(frozen=True)
class RingEncoding:
    """Signed fixed-point numbers as words of Z_(2^word_bits).

    Attributes:
        word_bits: 32 or 64.
        fraction_bits: Values are multiples of 2^-fraction_bits (rounding error at most half of that).
        max_abs: Largest |x| `encode` accepts; larger inputs are refused (use `clip` first to clip).
    """

    word_bits: int = 32
    fraction_bits: int = 16
    max_abs: float = 1.0

    def __post_init__(self):
        word_dtype(self.word_bits)
        if not 0 <= self.fraction_bits < self.word_bits - 1:
            raise CryptoError(f"fraction_bits must be in [0, {self.word_bits - 2}], got {self.fraction_bits}")
        if not (math.isfinite(self.max_abs) and self.max_abs > 0):
            raise CryptoError(f"max_abs must be a positive number, got {self.max_abs}")
        if self.value_bound < 1:
            raise CryptoError("max_abs * 2^fraction_bits must be at least 1/2; raise fraction_bits")
        if self.value_bound > 2 ** (self.word_bits - 1) - 1:
            raise CryptoError(f"max_abs * 2^fraction_bits must stay below 2^{self.word_bits - 1}")
        if self.word_bits == 64 and self.fraction_bits > 52:
            raise CryptoError("64-bit words take at most 52 fraction bits (float64 precision)")

    @property
    def dtype(self) -> np.dtype:
        return word_dtype(self.word_bits)

    @property
    def value_bound(self) -> int:
        """The largest |encoded value| of one input."""
        return math.floor(self.max_abs * 2**self.fraction_bits + 0.5)  # what rint gives at +-max_abs

    @property
    def max_summands(self) -> int:
        """How many encoded inputs can be summed before the sum could wrap around."""
        return (2 ** (self.word_bits - 1) - 1) // self.value_bound

    @property
    def max_abs_sum(self) -> float:
        """Sums whose true value has |sum| <= this decode exactly (up to rounding of each input)."""
        return (2 ** (self.word_bits - 1) - 1) / 2**self.fraction_bits

    def clip(self, values: np.ndarray) -> np.ndarray:
        """float64 values clipped to [-max_abs, max_abs]; CryptoError for NaN or infinities."""
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            raise CryptoError("cannot encode NaN or infinite values")
        return np.clip(array, -self.max_abs, self.max_abs)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Words round(values * 2^fraction_bits) mod 2^word_bits; CryptoError outside [-max_abs, max_abs]."""
        array = np.asarray(values)
        if array.dtype.kind not in "fiu":
            raise CryptoError(f"cannot encode values of dtype {array.dtype}; expected numbers")
        scaled = scaled_fixed_point(array, self.fraction_bits, self.max_abs, self.value_bound)
        signed = np.int32 if self.word_bits == 32 else np.int64
        return scaled.astype(signed).view(self.dtype)

    def decode(self, words: np.ndarray) -> np.ndarray:
        """float64 values of words read as signed fixed-point numbers."""
        signed = np.dtype("<i4") if self.word_bits == 32 else np.dtype("<i8")
        return np.ldexp(_as_words(words, self.dtype).view(signed).astype(np.float64), -self.fraction_bits)


def share(words: np.ndarray, parties: int, word_bits: int = 32) -> np.ndarray:
    """An (parties, *words.shape) array of additive shares of `words` mod 2^word_bits."""
    dtype = word_dtype(word_bits)
    array = _as_words(words, dtype)
    if parties < 2:
        raise CryptoError(f"additive sharing needs at least 2 parties, got {parties}")
    shares = random_words((parties - 1) * array.size, word_bits).reshape(parties - 1, *array.shape)
    last = array - shares.sum(axis=0, dtype=dtype)  # unsigned arithmetic wraps mod 2^word_bits
    return np.concatenate([shares, last[np.newaxis]])


def reconstruct(shares: np.ndarray, word_bits: int = 32) -> np.ndarray:
    """The shared words: the sum mod 2^word_bits of all shares along the first axis."""
    dtype = word_dtype(word_bits)
    array = _as_words(shares, dtype)
    if array.ndim < 1 or array.shape[0] < 1:
        raise CryptoError("no shares to reconstruct from")
    return array.sum(axis=0, dtype=dtype)


def _as_words(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind != "u" or array.dtype.itemsize != dtype.itemsize:
        raise CryptoError(f"expected {dtype.itemsize * 8}-bit unsigned words, got {array.dtype}")
    return array.astype(dtype, copy=False)
