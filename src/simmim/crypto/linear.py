"""Plaintext-weight linear maps on encrypted vectors: y = W x + b with x encrypted value by value.

Output j is the ciphertext product over i of c_i^(W_ji), a multi-exponentiation. It is done
with Pippenger's bucket method per window of `WINDOW_BITS` exponent bits: each base is
multiplied into the bucket of its digit, then sum_d d * bucket_d comes from two running
products. For 512 inputs and 16-bit weights that is about 2,100 modular multiplications per
output instead of 512 separate exponentiations (whose setup alone costs more in gmpy2).
Negative weights go to a second product that is inverted once per output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import gmpy2
import numpy as np

from simmim.crypto.paillier import DEFAULT_MODE
from simmim.crypto.vector import EncryptedVector
from simmim.errors import CryptoError

WINDOW_BITS = 4


def multi_power(bases: Sequence[gmpy2.mpz], exponents: Sequence[int], modulus: gmpy2.mpz) -> gmpy2.mpz:
    """prod bases[i]^exponents[i] mod modulus, for non-negative integer exponents."""
    pairs = [(b, int(e)) for b, e in zip(bases, exponents) if e]
    if any(e < 0 for _, e in pairs):
        raise ValueError("multi_power needs non-negative exponents")
    if not pairs:
        return gmpy2.mpz(1)
    windows = -(-max(e.bit_length() for _, e in pairs) // WINDOW_BITS)
    mask = (1 << WINDOW_BITS) - 1
    result = None
    for window in reversed(range(windows)):
        if result is not None:
            for _ in range(WINDOW_BITS):
                result = result * result % modulus
        shift = window * WINDOW_BITS
        buckets: list = [None] * (mask + 1)
        for base, exponent in pairs:
            digit = (exponent >> shift) & mask
            if digit:
                bucket = buckets[digit]
                buckets[digit] = base if bucket is None else bucket * base % modulus
        running = total = None
        for digit in range(mask, 0, -1):  # total = prod_d bucket_d^d
            bucket = buckets[digit]
            if bucket is not None:
                running = bucket if running is None else running * bucket % modulus
            if running is not None:
                total = running if total is None else total * running % modulus
        if total is not None:
            result = total if result is None else result * total % modulus
    return gmpy2.mpz(1) if result is None else result


def quantise(values: np.ndarray, fraction_bits: int) -> np.ndarray:
    """round(values * 2^fraction_bits) as int64; CryptoError for non-finite or too large values."""
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise CryptoError("weights must be finite numbers")
    scaled = np.rint(np.ldexp(array, fraction_bits))
    if scaled.size and np.abs(scaled).max() >= 2**62:
        raise CryptoError(f"weights too large for {fraction_bits} fraction bits")
    return scaled.astype(np.int64)


def encrypted_linear(x: EncryptedVector, weights: np.ndarray, bias: np.ndarray | None = None, *,
                     weight_fraction_bits: int = 16, rerandomise: bool = True,
                     mode: str = DEFAULT_MODE) -> EncryptedVector:
    """Enc(W x + b) from Enc(x) and plaintext W (out x in) and b (out), never seeing x.

    The weights are rounded to multiples of 2^-weight_fraction_bits; the result is exact for
    the rounded weights, at x.fraction_bits + weight_fraction_bits fraction bits. The outputs
    are re-randomised by default so that they reveal nothing about W beyond W x + b.
    """
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != x.length:
        raise CryptoError(f"weights of shape {weights.shape} do not match an encrypted vector of {x.length} values")
    if x.layout.slots != 1:
        raise CryptoError("a linear map needs one value per ciphertext: encrypt the input with packed=False")
    quantised = quantise(weights, weight_fraction_bits)
    fraction_bits = x.fraction_bits + weight_fraction_bits
    bias_q = None if bias is None else quantise(np.broadcast_to(bias, (weights.shape[0],)), fraction_bits)
    bound = x.bound * int(np.abs(quantised.astype(object)).sum(axis=1).max())
    bound += 0 if bias_q is None else int(np.abs(bias_q).max())
    x._check_bound(bound, "this linear map")
    pub = x.public_key
    n2 = pub.n_square
    outputs = []
    for j, row in enumerate(quantised.tolist()):
        positive = multi_power(x.ciphertexts, [w if w > 0 else 0 for w in row], n2)
        negative = multi_power(x.ciphertexts, [-w if w < 0 else 0 for w in row], n2)
        out = positive if negative == 1 else positive * gmpy2.invert(negative, n2) % n2
        if bias_q is not None:
            out = pub.add_plain(out, int(bias_q[j]))
        outputs.append(pub.rerandomise(out, mode) if rerandomise else out)
    return replace(x, ciphertexts=tuple(outputs), length=len(outputs), fraction_bits=fraction_bits, bound=bound)
