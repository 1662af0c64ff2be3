"""Shamir secret sharing over the prime field GF(p), p = 2^61 - 1, for many secrets at once.

A secret s gets a random polynomial f of degree threshold - 1 with f(0) = s; the share of the party
at x is f(x). Any `threshold` shares give s back by Lagrange interpolation; fewer are jointly uniform
and independent of s (perfect secrecy). Coefficients come from the OS CSPRNG (`prg.random_words`).

Arithmetic is exact and object-free: field elements are uint64 below p and a product of two of them is
assembled from four 32 x 32-bit partial products, using 2^61 = 1 (mod p) to fold the high bits, so
every step stays below 2^64. Splitting m secrets among n parties costs (threshold - 1) * n * m
multiplications of whole numpy arrays; recovering them costs threshold * m.

`recover` checks any shares beyond the first `threshold` against the polynomial those define, so a
corrupted or mismatched share among more than `threshold` is refused instead of giving a wrong secret
(with exactly `threshold` shares nothing can be checked: a wrong share gives a wrong secret).

Byte strings are shared as elements of 7 bytes each (`bytes_to_elements`, `elements_to_bytes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simmim.crypto.prg import random_words
from simmim.errors import CryptoError

PRIME = (1 << 61) - 1
BYTES_PER_ELEMENT = 7  # 56 bits: every 7-byte chunk is a field element
_P = np.uint64(PRIME)
_LOW32 = np.uint64(0xFFFFFFFF)
_LOW29 = np.uint64((1 << 29) - 1)


def _fold(x: np.ndarray) -> np.ndarray:
    """x mod p for x < 2^64 - 8 (one fold and one conditional subtraction)."""
    r = (x & _P) + (x >> np.uint64(61))
    return np.where(r >= _P, r - _P, r)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b mod p, element-wise (broadcasting), for uint64 arrays of field elements."""
    a0, a1 = a & _LOW32, a >> np.uint64(32)  # a1 < 2^29
    b0, b1 = b & _LOW32, b >> np.uint64(32)
    low = a0 * b0  # < 2^64
    mid = a1 * b0 + a0 * b1  # < 2^62; mid * 2^32 = (mid >> 29) * 2^61 + (mid & (2^29 - 1)) * 2^32
    high = a1 * b1  # < 2^58; high * 2^64 = high * 8 (mod p)
    total = ((high << np.uint64(3)) + (mid >> np.uint64(29)) + ((mid & _LOW29) << np.uint64(32))
             + (low & _P) + (low >> np.uint64(61)))  # < 2^63
    return _fold(total)


def mul_small(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a * x mod p for field elements a and multipliers x < 2^32 (evaluation points): two partial products."""
    low = (a & _LOW32) * x  # < 2^64
    high = (a >> np.uint64(32)) * x  # < 2^61; high * 2^32 = (high >> 29) * 2^61 + (high & (2^29 - 1)) * 2^32
    return _fold((high >> np.uint64(29)) + ((high & _LOW29) << np.uint64(32)) + (low & _P) + (low >> np.uint64(61)))


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b mod p, element-wise."""
    total = a + b
    return np.where(total >= _P, total - _P, total)


def random_elements(count: int) -> np.ndarray:
    """`count` uniform field elements (61-bit words from the CSPRNG, redrawn in the rare case of p)."""
    elements = random_words(count, 64) >> np.uint64(3)
    while (bad := elements == _P).any():  # probability 2^-61 per element
        elements[bad] = random_words(int(bad.sum()), 64) >> np.uint64(3)
    return elements


def split(secrets: np.ndarray, threshold: int, xs: Sequence[int]) -> np.ndarray:
    """Shares of every secret for the parties at `xs`: shape (len(xs), *secrets.shape), uint64.

    Args:
        secrets: Field elements (integers in [0, p)), any shape.
        threshold: How many shares recover a secret; fewer reveal nothing.
        xs: The parties' distinct evaluation points in [1, p).
    """
    values = _as_elements(secrets, "secret")
    points = _check_points(xs)
    if not 1 <= threshold <= len(points):
        raise CryptoError(f"threshold must be between 1 and the number of shares ({len(points)}), got {threshold}")
    flat = values.reshape(-1)
    coefficients = random_elements((threshold - 1) * flat.size).reshape(threshold - 1, flat.size)
    x = np.array(points, dtype=np.uint64)[:, np.newaxis]
    times_x = mul_small if max(points) < 2**32 else mul
    # Horner's rule for all parties and all secrets at once, from the top coefficient down.
    shares = np.broadcast_to(coefficients[-1] if threshold > 1 else flat, (len(points), flat.size))
    for coefficient in coefficients[-2::-1]:
        shares = add(times_x(shares, x), coefficient)
    if threshold > 1:
        shares = add(times_x(shares, x), flat)
    return np.ascontiguousarray(shares).reshape(len(points), *values.shape)


def recover(xs: Sequence[int], shares: np.ndarray, threshold: int) -> np.ndarray:
    """The secrets from at least `threshold` shares; CryptoError if too few or if extra shares disagree.

    Args:
        xs: The evaluation points of the shares, in the order of `shares`' first axis.
        shares: uint64 field elements of shape (len(xs), *secret_shape).
        threshold: The threshold the secrets were split with.
    """
    points = _check_points(xs)
    values = _as_elements(shares, "share")
    if values.ndim < 1 or values.shape[0] != len(points):
        raise CryptoError(f"got {len(points)} points but {values.shape[0] if values.ndim else 0} shares")
    if threshold < 1:
        raise CryptoError(f"threshold must be at least 1, got {threshold}")
    if len(points) < threshold:
        raise CryptoError(f"{len(points)} shares cannot recover a secret split with threshold {threshold}")
    # f(0) and f at every extra point, from the first `threshold` shares, in one pass over them.
    evaluated = _interpolate(points[:threshold], values[:threshold], [0, *points[threshold:]])
    for i in range(threshold, len(points)):
        if not np.array_equal(evaluated[i - threshold + 1], values[i]):
            raise CryptoError(f"the share at x={points[i]} does not match the others; it was corrupted or "
                              "belongs to another secret")
    return evaluated[0]


def bytes_to_elements(data: bytes) -> np.ndarray:
    """Field elements holding `data`, 7 bytes each (little-endian, the last one zero-padded)."""
    count = -(-len(data) // BYTES_PER_ELEMENT)
    padded = np.frombuffer(bytes(data) + bytes(count * BYTES_PER_ELEMENT - len(data)), dtype=np.uint8)
    wide = np.zeros((count, 8), dtype=np.uint8)
    wide[:, :BYTES_PER_ELEMENT] = padded.reshape(count, BYTES_PER_ELEMENT)
    return wide.view("<u8").reshape(count).astype(np.uint64)


def elements_to_bytes(elements: np.ndarray, length: int) -> bytes:
    """The `length` bytes held by `elements`; CryptoError if they cannot have come from `bytes_to_elements`."""
    values = _as_elements(elements, "element").reshape(-1)
    if values.size * BYTES_PER_ELEMENT < length or (values >> np.uint64(8 * BYTES_PER_ELEMENT)).any():
        raise CryptoError("recovered elements do not encode a byte string of the expected length")
    data = values.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :BYTES_PER_ELEMENT].tobytes()
    if any(data[length:]):
        raise CryptoError("recovered elements do not encode a byte string of the expected length")
    return data[:length]


def _interpolate(points: list[int], values: np.ndarray, at: list[int]) -> np.ndarray:
    """f(a) for each a in `at`, f the polynomial of degree len(points) - 1 through (points[i], values[i])."""
    coefficients = np.array([_lagrange_coefficients(points, a) for a in at], dtype=np.uint64)
    flat = values.reshape(len(points), -1)
    result = np.zeros((len(at), flat.shape[1]), dtype=np.uint64)
    for i in range(len(points)):
        result = add(result, mul(flat[i][np.newaxis, :], coefficients[:, i:i + 1]))
    return result.reshape(len(at), *values.shape[1:])


def _lagrange_coefficients(points: list[int], at: int) -> list[int]:
    """l_i(at) for the Lagrange basis on `points`, in Python integers mod p."""
    coefficients = []
    for i, xi in enumerate(points):
        numerator, denominator = 1, 1
        for j, xj in enumerate(points):
            if j != i:
                numerator = numerator * (at - xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return coefficients


def _check_points(xs: Sequence[int]) -> list[int]:
    points = [int(x) for x in xs]
    if not points:
        raise CryptoError("no evaluation points given")
    if any(not 0 < x < PRIME for x in points):
        raise CryptoError(f"evaluation points must be in [1, 2^61 - 2], got {min(points)}..{max(points)}")
    if len(set(points)) != len(points):
        raise CryptoError("evaluation points must be distinct")
    return points


def _as_elements(values: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise CryptoError(f"{what}s must be integers in [0, p), got dtype {array.dtype}")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise CryptoError(f"{what}s must be integers in [0, p)")
    array = array.astype(np.uint64)
    if array.size and array.max() >= _P:
        raise CryptoError(f"a {what} is not below p = 2^61 - 1")
    return array
