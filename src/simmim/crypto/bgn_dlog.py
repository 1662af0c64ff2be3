"""Discrete logarithms in GT over a signed window: the last step of every BGN decryption.

BGN decrypts to g^m with g = e(P, Q); m itself is found by baby-step giant-step (BSGS) in
[-bound, bound]. Shifting by g^bound makes the target m + bound in [0, 2 * bound]; a table of the
first 2^table_bits powers of g (the baby steps) is searched with giant steps of g^-(2^table_bits),
so a window of W = 2 * bound + 1 values costs 2^table_bits table entries once and at most
W / 2^table_bits giant steps per decryption.

The table stores a 64-bit key per power (`GT.raw_key`, from mcl's reduced internal form) in one
sorted numpy array: 2^20 entries take 12 MB (the design notes measured ~115 MB for a dict of them). A key
match is only a candidate: it is confirmed by one exponentiation before it is returned, so a key
collision costs time, never a wrong result. Giant steps are taken in chunks and looked up with one
vectorised search per chunk.

The base g is the same for every key pair (it is fixed by the curve's generators), so one table
per `table_bits` serves all keys; tables are built on first use and cached for the process.

Timing reveals the size of the result (more giant steps for larger |m|): decrypt where that does not
matter, or pad the work by always running all giant steps (not done here).
"""

from __future__ import annotations

import functools

import numpy as np

from simmim.crypto.pairing import G1_GENERATOR, G2_GENERATOR, GT, gt_powers, pairing
from simmim.errors import CryptoError

MAX_TABLE_BITS = 24
GIANT_CHUNK = 512


@functools.cache
def gt_generator() -> GT:
    """g = e(P, Q) for the standard generators: the base of every BGN plaintext in GT."""
    return pairing(G1_GENERATOR, G2_GENERATOR)


def default_table_bits(bound: int) -> int:
    """A table of about 8 sqrt(window) entries: a few ms per decryption at +-2^31 for a one-off ~1 s build."""
    window_bits = (2 * bound + 1).bit_length()
    return max(4, min(MAX_TABLE_BITS - 2, -(-window_bits // 2) + 3))


@functools.lru_cache(maxsize=4)
def _baby_steps(table_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys of g^j for j in [0, 2^table_bits), and the j of each key."""
    keys = np.fromiter(gt_powers(gt_generator(), GT.one(), 1 << table_bits), dtype=np.uint64,
                       count=1 << table_bits)
    order = np.argsort(keys, kind="stable")
    return keys[order], order.astype(np.uint32)


def prepare_table(bound: int, table_bits: int | None = None) -> int:
    """Builds (once per process) the table `discrete_log` uses for this window; returns its log2 size.

    For services that should not pay the build on their first decryption."""
    table_bits = _check_window(bound, table_bits)
    _baby_steps(table_bits)
    return table_bits


def _check_window(bound: int, table_bits: int | None) -> int:
    if bound < 0:
        raise CryptoError(f"the decryption bound must be non-negative, got {bound}")
    table_bits = default_table_bits(bound) if table_bits is None else table_bits
    if not 1 <= table_bits <= MAX_TABLE_BITS:
        raise CryptoError(f"table_bits must be in [1, {MAX_TABLE_BITS}], got {table_bits}")
    return table_bits


def discrete_log(target: GT, bound: int, table_bits: int | None = None) -> int:
    """The m in [-bound, bound] with g^m = target; CryptoError when there is none.

    Args:
        target: An element of GT (a decrypted BGN result).
        bound: The window: results outside [-bound, bound] are reported as out of range.
        table_bits: log2 of the baby-step table (default: `default_table_bits(bound)`).
    """
    table_bits = _check_window(bound, table_bits)
    keys, exponents = _baby_steps(table_bits)
    g, step = gt_generator(), 1 << table_bits
    giant = (g**step).inverse()
    shifted = target * g**bound  # its exponent is m + bound, in [0, 2 * bound] when m is in range
    giants = -(-(2 * bound + 1) // step)
    for first in range(0, giants, GIANT_CHUNK):
        count = min(GIANT_CHUNK, giants - first)
        found = _lookup(keys, exponents, np.fromiter(gt_powers(giant, shifted * giant**first, count), np.uint64,
                                                     count=count))
        for k, j in found:
            value = (first + k) * step + j - bound
            if -bound <= value <= bound and g**value == target:
                return value
    raise CryptoError(f"the decrypted result is outside the window [-{bound}, {bound}]: widen the window "
                      "(slower decryption) or encode with fewer fraction bits")


def _lookup(keys: np.ndarray, exponents: np.ndarray, probes: np.ndarray) -> list[tuple[int, int]]:
    """(probe index, table exponent) for every table entry whose key equals a probe's, probes in order."""
    left = np.searchsorted(keys, probes, side="left")
    right = np.searchsorted(keys, probes, side="right")
    return [(int(k), int(exponents[i])) for k in np.flatnonzero(right > left) for i in range(left[k], right[k])]
