"""Exact samplers for DP noise, from uniform random integers and rational arithmetic only.

Floating-point noise leaks (Mironov 2012): the low-order bits of a float Laplace sample reveal
which values it could have been added to. These samplers never touch a float. They follow
Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020),
Algorithms 1-3: Bernoulli(exp(-gamma)) for rational gamma, then the discrete Laplace and the
discrete Gaussian by rejection. Their outputs have exactly the stated distributions.

Randomness comes from a `random.Random`-like source; the default is the operating system's
CSPRNG (`secrets.SystemRandom`). Tests pass a seeded `random.Random` for reproducibility.
"""

from __future__ import annotations

import math
import random
import secrets
from fractions import Fraction

Rational = int | Fraction
_SYSTEM_RANDOM = secrets.SystemRandom()


def default_source() -> random.Random:
    """The OS CSPRNG, the source every sampler uses unless given one."""
    return _SYSTEM_RANDOM


def to_fraction(value: float | Rational | str) -> Fraction:
    """An exact rational for a privacy parameter.

    Ints and Fractions are kept as they are; a float becomes the shortest decimal that prints as
    it (so 0.1 means 1/10, the value the user wrote, not the binary float's expansion); a string
    is parsed as a decimal or ``"p/q"``.
    """
    if isinstance(value, Fraction | int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value}")
        return Fraction(repr(value))
    return Fraction(value)


def bernoulli(p: Fraction, rng: random.Random | None = None) -> bool:
    """True with probability exactly `p`, for rational p in [0, 1]."""
    if not 0 <= p <= 1:
        raise ValueError(f"a probability must be in [0, 1], got {p}")
    rng = rng or _SYSTEM_RANDOM
    return rng.randrange(p.denominator) < p.numerator


def bernoulli_exp(gamma: Rational, rng: random.Random | None = None) -> bool:
    """True with probability exactly exp(-gamma), for rational gamma >= 0 (CKS Algorithm 1)."""
    gamma = Fraction(gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    rng = rng or _SYSTEM_RANDOM
    # exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma))): each factor is one draw.
    whole = math.floor(gamma)
    for _ in range(whole):
        if not _bernoulli_exp_at_most_one(Fraction(1), rng):
            return False
    return _bernoulli_exp_at_most_one(gamma - whole, rng)


def _bernoulli_exp_at_most_one(gamma: Fraction, rng: random.Random) -> bool:
    # For gamma in [0, 1]: draw A_k ~ Bernoulli(gamma / k) for k = 1, 2, ... until one is 0; the
    # index K of that draw is odd with probability exactly exp(-gamma) (series of exp(-gamma)).
    k = 1
    while bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def discrete_laplace(scale: Rational, rng: random.Random | None = None) -> int:
    """An integer Z with P(Z = z) proportional to exp(-|z| / scale), for rational scale > 0 (CKS Algorithm 2)."""
    scale = Fraction(scale)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    rng = rng or _SYSTEM_RANDOM
    # scale = t / s with integers s, t: the pmf is proportional to exp(-|z| * s / t).
    t, s = scale.numerator, scale.denominator
    while True:
        # X = U + t * V is geometric with P(X = x) proportional to exp(-x / t): U uniform on
        # [0, t) accepted with probability exp(-U / t), V geometric with ratio exp(-1).
        u = rng.randrange(t)
        if not bernoulli_exp(Fraction(u, t), rng):
            continue
        v = 0
        while bernoulli_exp(1, rng):
            v += 1
        magnitude = (u + t * v) // s
        negative = rng.randrange(2) == 1
        if negative and magnitude == 0:
            continue  # otherwise zero would be drawn twice as often as it should
        return -magnitude if negative else magnitude


def discrete_gaussian(sigma_squared: Rational, rng: random.Random | None = None) -> int:
    """An integer Z with P(Z = z) proportional to exp(-z^2 / (2 sigma^2)), for rational sigma^2 > 0.

    CKS Algorithm 3: a discrete Laplace proposal of scale t = floor(sigma) + 1, accepted with
    probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)).
    """
    sigma_squared = Fraction(sigma_squared)
    if sigma_squared <= 0:
        raise ValueError(f"sigma^2 must be positive, got {sigma_squared}")
    rng = rng or _SYSTEM_RANDOM
    t = math.isqrt(math.floor(sigma_squared)) + 1  # floor(sqrt(x)) == isqrt(floor(x)) for x >= 0
    while True:
        y = discrete_laplace(t, rng)
        if bernoulli_exp((abs(y) - sigma_squared / t) ** 2 / (2 * sigma_squared), rng):
            return y
