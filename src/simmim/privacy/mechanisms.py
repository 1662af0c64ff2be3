"""DP mechanisms for released statistics: counts, values on a grid, histograms, a private choice.

Every mechanism adds integer noise from the exact samplers of `samplers` (never floating-point
noise, which leaks through its low-order bits: Mironov 2012) and returns a `DpRelease`: the
value, the guarantee it was calibrated to, and the accounting event to record in the budget
ledger. The neighbouring relation is add-or-remove one privacy unit; each function states the
sensitivity it assumes, and the caller must make it true (see `bounded_counts`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

from scipy.special import log_ndtr, ndtr

from simmim.errors import PrivacyError
from simmim.privacy.accounting import (
    DiscreteGaussian,
    DiscreteLaplace,
    PrivacyEvent,
    PureDp,
    check_delta,
    check_positive,
    composed_epsilon,
)
from simmim.privacy.samplers import bernoulli_exp, default_source, discrete_gaussian, discrete_laplace, to_fraction

T = TypeVar("T")
MECHANISMS = ("laplace", "gaussian")
# Calibrated noise is found to this relative precision, then rounded up.
_SIGMA_RELATIVE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DpRelease(Generic[T]):
    """A differentially private value and what it cost.

    Attributes:
        value: The released value.
        epsilon: The guarantee's epsilon (per privacy unit).
        delta: The guarantee's delta (0 for pure DP).
        event: The accounting event to record in the ledger.
    """

    value: T
    epsilon: float
    delta: float
    event: PrivacyEvent


def laplace_count(value: int, sensitivity: int, epsilon: float | Fraction, *,
                  rng: random.Random | None = None) -> DpRelease[int]:
    """An integer query plus discrete Laplace noise of scale sensitivity / epsilon: epsilon-DP.

    Args:
        value: The true value, e.g. a count.
        sensitivity: How much one unit can change `value` (a positive integer).
        epsilon: Privacy parameter; floats are read as the decimal they print as.
        rng: Random source; default the OS CSPRNG.
    """
    _check_sensitivity(sensitivity)
    exact_epsilon = exact_positive("epsilon", epsilon)
    scale = Fraction(sensitivity) / exact_epsilon
    noisy = value + discrete_laplace(scale, rng)
    return DpRelease(noisy, float(exact_epsilon), 0.0, DiscreteLaplace(float(scale), sensitivity))


def laplace_on_grid(value: float, *, sensitivity: float, epsilon: float | Fraction, resolution: float,
                    rng: random.Random | None = None) -> DpRelease[float]:
    """A real query released on the grid resolution * Z with discrete Laplace noise: epsilon-DP.

    The value is rounded to the grid first (half up), which can stretch the sensitivity to the
    next whole number of grid steps; the noise is calibrated to that.
    """
    exact_sensitivity = exact_positive("sensitivity", sensitivity)
    step = exact_positive("resolution", resolution)
    grid_index = math.floor(to_fraction(value) / step + Fraction(1, 2))
    grid_sensitivity = math.ceil(exact_sensitivity / step)
    release = laplace_count(grid_index, grid_sensitivity, epsilon, rng=rng)
    return DpRelease(float(release.value * step), release.epsilon, 0.0, release.event)


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest noise std of the (continuous) Gaussian mechanism that is (epsilon, delta)-DP.

    Balle & Wang (2018), Theorem 8: the mechanism is (epsilon, delta)-DP iff
    Phi(D/(2s) - eps*s/D) - exp(eps) * Phi(-D/(2s) - eps*s/D) <= delta. The left side decreases in
    s; we bisect on it and return the upper end, so the condition holds. Unlike the classical
    sqrt(2 ln(1.25/delta)) * D / eps, this is exact and valid for any epsilon.
    """
    _check_epsilon_delta(epsilon, delta)
    exact_positive("sensitivity", sensitivity)

    def delta_at(sigma: float) -> float:
        a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
        return float(ndtr(a - b) - math.exp(epsilon + log_ndtr(-a - b)))

    low = high = float(sensitivity)
    while delta_at(high) > delta:
        high *= 2
    while delta_at(low) <= delta:
        low /= 2
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        if delta_at(middle) <= delta:
            high = middle
        else:
            low = middle
    return high


def discrete_gaussian_sigma(epsilon: float, delta: float, *, sensitivity: int = 1, count: int = 1) -> float:
    """The smallest sigma (to 0.1 %, rounded up) of discrete Gaussian noise that is (epsilon, delta)-DP.

    The discrete Gaussian is almost, not exactly, as private as the continuous one with the same
    sigma (Canonne, Kamath & Steinke 2020), so we start from the analytic Gaussian sigma and
    settle it on the discrete mechanism's own PLD (dp_accounting).

    Args:
        epsilon: Target epsilon.
        delta: Target delta.
        sensitivity: How much one unit moves one coordinate (a positive integer).
        count: How many coordinates one unit can move (histogram bins per unit).
    """
    _check_epsilon_delta(epsilon, delta)
    _check_sensitivity(sensitivity)
    if count < 1:
        raise PrivacyError(f"count must be a positive integer, got {count}")

    def private_enough(sigma: float) -> bool:
        return composed_epsilon([DiscreteGaussian(sigma, sensitivity, count)], delta) <= epsilon

    high = analytic_gaussian_sigma(epsilon, delta, sensitivity * math.sqrt(count))
    while not private_enough(high):
        high *= 1.05
    low = high / 1.05
    while private_enough(low):
        low /= 1.05
    while high - low > _SIGMA_RELATIVE_TOLERANCE * high:
        middle = (low + high) / 2
        if private_enough(middle):
            high = middle
        else:
            low = middle
    return high


def gaussian_count(value: int, sensitivity: int, epsilon: float, delta: float, *,
                   rng: random.Random | None = None) -> DpRelease[int]:
    """An integer query plus discrete Gaussian noise calibrated to (epsilon, delta)."""
    sigma = discrete_gaussian_sigma(epsilon, delta, sensitivity=sensitivity)
    noisy = value + discrete_gaussian(Fraction(sigma) ** 2, rng)
    return DpRelease(noisy, epsilon, delta, DiscreteGaussian(sigma, sensitivity))


def permute_and_flip(utilities: Mapping[str, float | Fraction], epsilon: float | Fraction, *, sensitivity: float = 1,
                     rng: random.Random | None = None) -> DpRelease[str]:
    """Chooses a candidate with high utility, epsilon-DP (McKenna & Sheldon 2020).

    Candidates are visited in a random order; candidate r is accepted with probability
    exp(epsilon * (u_r - u_max) / (2 * sensitivity)), drawn exactly. The best candidate is always
    accepted, so one pass suffices. Its expected utility is never worse than the exponential
    mechanism's at the same epsilon.

    Args:
        utilities: Utility of each candidate; the candidates themselves must not depend on the data.
        epsilon: Privacy parameter.
        sensitivity: How much one unit can change any candidate's utility.
        rng: Random source; default the OS CSPRNG.
    """
    if not utilities:
        raise PrivacyError("permute-and-flip needs at least one candidate")
    rng = rng or default_source()
    exact_epsilon = exact_positive("epsilon", epsilon)
    exact_sensitivity = exact_positive("sensitivity", sensitivity)
    exact = {candidate: to_fraction(u) for candidate, u in utilities.items()}
    best = max(exact.values())
    order = list(exact)
    rng.shuffle(order)
    chosen = next(candidate for candidate in order
                  if bernoulli_exp(exact_epsilon * (best - exact[candidate]) / (2 * exact_sensitivity), rng))
    return DpRelease(chosen, float(exact_epsilon), 0.0, PureDp(float(exact_epsilon)))


def bounded_counts(items_by_unit: Mapping[str, Iterable[str]], *, domain: Sequence[str], bins_per_unit: int,
                   rng: random.Random | None = None) -> dict[str, int]:
    """Counts of units per bin, with each unit's contribution bounded for `dp_histogram`.

    Each unit counts at most once per bin and in at most `bins_per_unit` bins (a random subset
    when it has more, chosen independently of other units); items outside `domain` are dropped.

    Args:
        items_by_unit: For each privacy unit (a subject or a record), the bins it touches.
        domain: The bins, fixed in advance and independent of the data.
        bins_per_unit: The cap k; `dp_histogram` must be called with the same k.
        rng: Random source for the subsets; default the OS CSPRNG.
    """
    if bins_per_unit < 1:
        raise PrivacyError(f"bins_per_unit must be a positive integer, got {bins_per_unit}")
    rng = rng or default_source()
    counts = dict.fromkeys(domain, 0)
    for items in items_by_unit.values():
        kept = sorted(set(items) & counts.keys())
        if len(kept) > bins_per_unit:
            kept = rng.sample(kept, bins_per_unit)
        for item in kept:
            counts[item] += 1
    return counts


def dp_histogram(counts: Mapping[str, int], epsilon: float | Fraction, *, domain: Sequence[str], bins_per_unit: int = 1,
                 mechanism: str = "laplace", delta: float = 0.0,
                 rng: random.Random | None = None) -> DpRelease[dict[str, int]]:
    """A histogram over a fixed domain with integer noise in every bin, (epsilon, delta)-DP.

    Assumes one unit adds at most 1 to each of at most `bins_per_unit` bins (`bounded_counts`
    makes this true). Every bin of `domain` is released, empty or not: releasing only the bins
    that occur would reveal which values are present.

    Args:
        counts: True counts; keys must lie in `domain` (missing bins count 0).
        epsilon: Privacy parameter for the whole histogram.
        domain: The bins, fixed in advance and independent of the data.
        bins_per_unit: The cap k on bins per unit.
        mechanism: ``"laplace"`` (pure epsilon-DP, noise scale k / epsilon) or ``"gaussian"``
            (needs delta > 0; better for many bins per unit).
        delta: Privacy parameter for the Gaussian mechanism.
        rng: Random source; default the OS CSPRNG.

    Raises:
        PrivacyError: If a count lies outside the domain or a parameter is invalid.
    """
    outside = sorted(set(counts) - set(domain))
    if outside:
        raise PrivacyError(f"counts for {outside[:5]} lie outside the histogram's domain; map them into it first")
    event = histogram_event(epsilon, bins_per_unit=bins_per_unit, mechanism=mechanism, delta=delta)
    if isinstance(event, DiscreteLaplace):
        scale = bins_per_unit / exact_positive("epsilon", epsilon)
        noisy = {b: counts.get(b, 0) + discrete_laplace(scale, rng) for b in domain}
        return DpRelease(noisy, float(epsilon), 0.0, event)
    noisy = {b: counts.get(b, 0) + discrete_gaussian(Fraction(event.sigma) ** 2, rng) for b in domain}
    return DpRelease(noisy, float(epsilon), float(delta), event)


def histogram_event(epsilon: float | Fraction, *, bins_per_unit: int = 1, mechanism: str = "laplace",
                    delta: float = 0.0) -> PrivacyEvent:
    """The accounting event of `dp_histogram` with these parameters, to reserve budget before it runs."""
    if bins_per_unit < 1:
        raise PrivacyError(f"bins_per_unit must be a positive integer, got {bins_per_unit}")
    if mechanism == "laplace":
        return DiscreteLaplace(float(bins_per_unit / exact_positive("epsilon", epsilon)), 1, bins_per_unit)
    if mechanism == "gaussian":
        return DiscreteGaussian(discrete_gaussian_sigma(float(epsilon), delta, count=bins_per_unit), 1, bins_per_unit)
    raise PrivacyError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")


def exact_positive(name: str, value: float | Fraction) -> Fraction:
    """`value` as an exact rational (see `samplers.to_fraction`); PrivacyError unless it is positive."""
    try:
        exact = to_fraction(value)
    except (ValueError, TypeError, ZeroDivisionError):
        raise PrivacyError(f"{name} must be a positive number, got {value!r}") from None
    if exact <= 0:
        raise PrivacyError(f"{name} must be a positive number, got {value!r}")
    return exact


def _check_sensitivity(sensitivity: int) -> None:
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int) or sensitivity < 1:
        raise PrivacyError(f"sensitivity must be a positive integer, got {sensitivity!r}")


def _check_epsilon_delta(epsilon: float, delta: float) -> None:
    check_positive("epsilon", epsilon)
    check_delta(delta)
