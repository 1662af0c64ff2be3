import math
import random
import secrets
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from simmim.privacy.samplers import (
    bernoulli,
    bernoulli_exp,
    default_source,
    discrete_gaussian,
    discrete_laplace,
    to_fraction,
)

SAMPLES = 20_000


def chi_square_p_value(samples, pmf):
    """Goodness of fit of integer samples to `pmf` (a function), tails pooled so every bin expects >= 5."""
    counts = Counter(samples)
    support = range(min(counts), max(counts) + 1)
    expected = np.array([pmf(z) for z in support]) * len(samples)
    observed = np.array([counts[z] for z in support], dtype=float)
    # Pool from the outside in until each bin expects at least 5, keeping the mass outside the range.
    keep = expected >= 5
    first, last = np.argmax(keep), len(keep) - np.argmax(keep[::-1]) - 1
    inner_expected = expected[first:last + 1].copy()
    inner_observed = observed[first:last + 1].copy()
    low_tail = sum(pmf(z) for z in range(support.start - 60, support.start + first)) * len(samples)
    high_tail = len(samples) - low_tail - inner_expected.sum()
    expected = np.concatenate([[low_tail], inner_expected, [high_tail]])
    observed = np.concatenate([[observed[:first].sum()], inner_observed, [observed[last + 1:].sum()]])
    return stats.chisquare(observed, expected).pvalue


def discrete_laplace_pmf(scale):
    a = 1 / scale
    return lambda z: (1 - math.exp(-a)) / (1 + math.exp(-a)) * math.exp(-a * abs(z))


def discrete_gaussian_pmf(sigma_squared):
    norm = sum(math.exp(-z * z / (2 * sigma_squared)) for z in range(-2000, 2001))
    return lambda z: math.exp(-z * z / (2 * sigma_squared)) / norm


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(3, 10), Fraction(1), Fraction(5, 2)])
def test_bernoulli_exp_has_probability_exp_minus_gamma(gamma):
    rng = random.Random(7)
    hits = sum(bernoulli_exp(gamma, rng) for _ in range(SAMPLES))
    p = math.exp(-gamma)
    if gamma == 0:
        assert hits == SAMPLES
    else:
        assert stats.binomtest(hits, SAMPLES, p).pvalue > 1e-3


def test_bernoulli_is_exact_for_rationals():
    rng = random.Random(3)
    assert not any(bernoulli(Fraction(0), rng) for _ in range(100))
    assert all(bernoulli(Fraction(1), rng) for _ in range(100))
    hits = sum(bernoulli(Fraction(1, 3), rng) for _ in range(SAMPLES))
    assert stats.binomtest(hits, SAMPLES, 1 / 3).pvalue > 1e-3


@pytest.mark.parametrize("scale", [Fraction(3, 2), Fraction(5), Fraction(1, 3)])
def test_discrete_laplace_matches_its_pmf(scale):
    rng = random.Random(11)
    samples = [discrete_laplace(scale, rng) for _ in range(SAMPLES)]
    assert chi_square_p_value(samples, discrete_laplace_pmf(scale)) > 1e-3


@pytest.mark.parametrize("sigma_squared", [Fraction(4), Fraction(1, 4), Fraction(3.7) ** 2])
def test_discrete_gaussian_matches_its_pmf(sigma_squared):
    rng = random.Random(13)
    samples = [discrete_gaussian(sigma_squared, rng) for _ in range(SAMPLES)]
    assert chi_square_p_value(samples, discrete_gaussian_pmf(float(sigma_squared))) > 1e-3
    assert abs(np.mean(samples)) < 4 * math.sqrt(float(sigma_squared) / SAMPLES) + 0.01


def test_samplers_are_reproducible_with_a_seeded_source():
    first = [discrete_gaussian(9, random.Random(5)) for _ in range(3)]
    again = [discrete_gaussian(9, random.Random(5)) for _ in range(3)]
    assert first == again


def test_default_source_is_the_os_csprng():
    assert isinstance(default_source(), secrets.SystemRandom)
    assert isinstance(discrete_laplace(2), int)


def test_privacy_parameters_become_the_decimal_the_user_wrote():
    assert to_fraction(0.1) == Fraction(1, 10)
    assert to_fraction(3) == 3 and to_fraction(Fraction(2, 7)) == Fraction(2, 7)
    assert to_fraction("1/3") == Fraction(1, 3)
    with pytest.raises(ValueError):
        to_fraction(float("inf"))


@pytest.mark.parametrize(("sampler", "argument"), [(bernoulli_exp, -1), (discrete_laplace, 0), (discrete_gaussian, -2),
                                                   (bernoulli, Fraction(3, 2))])
def test_invalid_parameters_raise(sampler, argument):
    with pytest.raises(ValueError):
        sampler(argument, random.Random(0))
