import itertools
import math
import random
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from dp_accounting import get_sigma_gaussian
from scipy import stats
from scipy.special import ndtr

from simmim.errors import PrivacyError
from simmim.privacy.accounting import DiscreteGaussian, DiscreteLaplace, PureDp, composed_epsilon
from simmim.privacy.mechanisms import (
    analytic_gaussian_sigma,
    bounded_counts,
    discrete_gaussian_sigma,
    dp_histogram,
    gaussian_count,
    histogram_event,
    laplace_count,
    laplace_on_grid,
    permute_and_flip,
)

DELTA = 1e-5


def gaussian_delta(sigma, epsilon, sensitivity=1.0):
    """Balle & Wang's exact delta of the Gaussian mechanism (plain float formula, for checking)."""
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    return ndtr(a - b) - math.exp(epsilon) * ndtr(-a - b)


@pytest.mark.parametrize(("epsilon", "delta", "sensitivity"), [(1.0, 1e-5, 1.0), (0.1, 1e-6, 1.0), (5.0, 1e-5, 2.0),
                                                               (20.0, 1e-9, 1.0)])
def test_analytic_gaussian_sigma_is_the_exact_boundary(epsilon, delta, sensitivity):
    sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)
    assert gaussian_delta(sigma, epsilon, sensitivity) <= delta < gaussian_delta(sigma * (1 - 1e-6), epsilon,
                                                                                 sensitivity)
    assert sigma == pytest.approx(get_sigma_gaussian(epsilon, delta) * sensitivity, rel=1e-9)


def test_analytic_gaussian_beats_the_classical_calibration():
    # Known value: epsilon = 1, delta = 1e-5 -> sigma = 3.7306 (classical bound: 4.8448).
    assert analytic_gaussian_sigma(1.0, DELTA) == pytest.approx(3.7306, abs=1e-4)
    for epsilon in (0.1, 0.5, 0.9):
        classical = math.sqrt(2 * math.log(1.25 / DELTA)) / epsilon
        assert analytic_gaussian_sigma(epsilon, DELTA) < classical


def test_discrete_gaussian_sigma_is_tight_on_its_own_pld():
    sigma = discrete_gaussian_sigma(1.0, DELTA)
    assert composed_epsilon([DiscreteGaussian(sigma)], DELTA) <= 1.0
    assert composed_epsilon([DiscreteGaussian(sigma * 0.998)], DELTA) > 1.0
    assert sigma == pytest.approx(analytic_gaussian_sigma(1.0, DELTA), rel=0.01)
    # k bins per unit compose: k times the variance costs what one bin costs.
    assert discrete_gaussian_sigma(1.0, DELTA, count=4) == pytest.approx(2 * sigma, rel=0.01)


def test_laplace_count_noise_has_the_calibrated_scale():
    rng = random.Random(21)
    releases = [laplace_count(100, 2, 0.5, rng=rng) for _ in range(5000)]
    assert releases[0].event == DiscreteLaplace(scale=4.0, sensitivity=2) and releases[0].delta == 0.0
    noise = np.array([r.value - 100 for r in releases])
    a = 1 / 4.0
    variance = 2 * math.exp(-a) / (1 - math.exp(-a)) ** 2
    assert noise.var() == pytest.approx(variance, rel=0.1)
    assert composed_epsilon([releases[0].event], 0.0) == pytest.approx(0.5, abs=1e-3)


def test_laplace_on_grid_releases_grid_points_with_grid_sensitivity():
    release = laplace_on_grid(3.14159, sensitivity=0.5, epsilon=1.0, resolution=0.01, rng=random.Random(1))
    assert release.event == DiscreteLaplace(scale=50.0, sensitivity=50)
    assert round(release.value / 0.01) * 0.01 == pytest.approx(release.value)
    # A sensitivity between grid steps is rounded up to the next whole step.
    assert laplace_on_grid(0.0, sensitivity=0.015, epsilon=1.0, resolution=0.01).event.sensitivity == 2


def test_gaussian_count_uses_the_calibrated_discrete_gaussian():
    rng = random.Random(4)
    releases = [gaussian_count(50, 1, 1.0, DELTA, rng=rng) for _ in range(3000)]
    sigma = discrete_gaussian_sigma(1.0, DELTA)
    assert releases[0].event == DiscreteGaussian(sigma) and releases[0].delta == DELTA
    assert np.std([r.value - 50 for r in releases]) == pytest.approx(sigma, rel=0.06)


def permute_and_flip_pmf(utilities, epsilon, sensitivity=1.0):
    """Exact output distribution, by enumerating every visiting order."""
    best = max(utilities.values())
    accept = {c: math.exp(epsilon * (u - best) / (2 * sensitivity)) for c, u in utilities.items()}
    pmf = dict.fromkeys(utilities, 0.0)
    orders = list(itertools.permutations(utilities))
    for order in orders:
        not_yet = 1.0
        for candidate in order:
            pmf[candidate] += not_yet * accept[candidate] / len(orders)
            not_yet *= 1 - accept[candidate]
    return pmf


def test_permute_and_flip_matches_its_exact_distribution():
    utilities = {"a": 3, "b": 2, "c": 2, "d": 0}
    rng = random.Random(17)
    counts = Counter(permute_and_flip(utilities, 1.0, rng=rng).value for _ in range(20_000))
    pmf = permute_and_flip_pmf(utilities, 1.0)
    observed = [counts[c] for c in utilities]
    expected = [pmf[c] * 20_000 for c in utilities]
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_permute_and_flip_is_epsilon_dp_and_beats_the_exponential_mechanism():
    epsilon, utilities = 1.0, {"a": 3, "b": 2, "c": 0}
    pmf = permute_and_flip_pmf(utilities, epsilon)
    # Neighbouring data change each utility by at most the sensitivity (1).
    for shift in itertools.product((-1, 0, 1), repeat=3):
        neighbour = permute_and_flip_pmf({c: u + s for (c, u), s in zip(utilities.items(), shift)}, epsilon)
        for c in utilities:
            assert pmf[c] <= math.exp(epsilon) * neighbour[c] + 1e-12
    weights = {c: math.exp(epsilon * u / 2) for c, u in utilities.items()}
    exponential_best = weights["a"] / sum(weights.values())
    assert pmf["a"] >= exponential_best
    release = permute_and_flip(utilities, epsilon, rng=random.Random(0))
    assert release.event == PureDp(1.0) and release.value in utilities


def test_bounded_counts_cap_each_units_contribution():
    items = {"ann": ["x", "y", "z", "x", "outside"], "bob": ["y"], "cy": []}
    counts = bounded_counts(items, domain=["x", "y", "z", "w"], bins_per_unit=2, rng=random.Random(2))
    assert set(counts) == {"x", "y", "z", "w"}
    assert sum(counts.values()) == 3 and counts["w"] == 0 and counts["y"] >= 1


def test_histogram_releases_every_bin_of_the_domain():
    domain = ["red", "green", "blue", "white"]
    release = dp_histogram({"red": 40, "blue": 3}, 1.0, domain=domain, bins_per_unit=2, rng=random.Random(8))
    assert list(release.value) == domain
    assert release.event == DiscreteLaplace(scale=2.0, count=2) == histogram_event(1.0, bins_per_unit=2)
    assert composed_epsilon([release.event], 0.0) == pytest.approx(1.0, abs=1e-3)
    gaussian = dp_histogram({"red": 40}, 1.0, domain=domain, mechanism="gaussian", delta=DELTA, rng=random.Random(8))
    assert gaussian.event == DiscreteGaussian(discrete_gaussian_sigma(1.0, DELTA)) and gaussian.delta == DELTA


def test_histogram_noise_is_unbiased_with_the_right_scale():
    rng = random.Random(9)
    domain = [str(i) for i in range(400)]
    noisy = dp_histogram(dict.fromkeys(domain, 10), 0.5, domain=domain, rng=rng).value
    noise = np.array(list(noisy.values())) - 10
    a = 0.5
    assert abs(noise.mean()) < 4 * math.sqrt(2 * math.exp(-a) / (1 - math.exp(-a)) ** 2 / len(domain))


def test_histogram_misuse_is_refused():
    with pytest.raises(PrivacyError, match="outside the histogram's domain"):
        dp_histogram({"mauve": 1}, 1.0, domain=["red"])
    with pytest.raises(PrivacyError, match="delta"):
        dp_histogram({"red": 1}, 1.0, domain=["red"], mechanism="gaussian")
    with pytest.raises(PrivacyError, match="mechanism must be"):
        dp_histogram({"red": 1}, 1.0, domain=["red"], mechanism="exponential")
    with pytest.raises(PrivacyError, match="sensitivity"):
        laplace_count(1, 0, 1.0)
    with pytest.raises(PrivacyError, match="epsilon"):
        laplace_count(1, 1, -1.0)
    with pytest.raises(PrivacyError, match="candidate"):
        permute_and_flip({}, 1.0)
    assert laplace_count(1, 1, Fraction(1, 3)).epsilon == pytest.approx(1 / 3)
