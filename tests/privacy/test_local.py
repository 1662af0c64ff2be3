import math
import random

import numpy as np
import pytest

from simmim.errors import PrivacyError
from simmim.privacy.accounting import PureDp, SubsampledGaussian, composed_epsilon
from simmim.privacy.local import (
    clip_l1,
    clip_l2,
    estimate_counts,
    gaussian_features,
    keep_probability,
    laplace_features,
    randomized_response,
)
from simmim.privacy.mechanisms import analytic_gaussian_sigma

CATEGORIES = ["cat", "dog", "bird", "fish"]
DELTA = 1e-5


def true_labels(n=8000):
    rng = np.random.default_rng(0)
    return list(rng.choice(CATEGORIES, size=n, p=[0.5, 0.3, 0.15, 0.05]))


def test_randomized_response_keeps_the_truth_with_the_k_rr_probability():
    labels = true_labels()
    release = randomized_response(labels, CATEGORIES, 1.0, rng=random.Random(1))
    kept = np.mean([r == t for r, t in zip(release.values, labels)])
    p = keep_probability(1.0, 4)
    assert p == pytest.approx(math.e / (math.e + 3))
    assert kept == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / len(labels)))
    assert release.event == PureDp(1.0) and (release.epsilon, release.delta) == (1.0, 0.0)


def test_frequency_estimator_is_unbiased():
    labels = true_labels()
    truth = {c: labels.count(c) for c in CATEGORIES}
    n, p = len(labels), keep_probability(1.0, 4)
    q = (1 - p) / 3
    # Exactly: feeding the expected reported counts returns the true counts.
    expected_reports = [c for c in CATEGORIES for _ in range(round(truth[c] * p + (n - truth[c]) * q))]
    for c, estimate in estimate_counts(expected_reports, CATEGORIES, 1.0).items():
        assert estimate == pytest.approx(truth[c], abs=1 / (p - q))  # the rounding above, nothing more
    # And on a real draw the error is within what its variance allows.
    estimates = estimate_counts(randomized_response(labels, CATEGORIES, 1.0, rng=random.Random(2)).values,
                                CATEGORIES, 1.0)
    for c in CATEGORIES:
        variance = (truth[c] * p * (1 - p) + (n - truth[c]) * q * (1 - q)) / (p - q) ** 2
        assert abs(estimates[c] - truth[c]) < 4 * math.sqrt(variance)


def test_a_units_records_share_its_budget():
    release = randomized_response(["cat", "dog", "cat", "fish"], CATEGORIES, 1.5, units=["u1", "u1", "u1", "u2"],
                                  rng=random.Random(3))
    assert release.records_per_unit == 3 and release.epsilon_per_record == pytest.approx(0.5)
    assert release.event == PureDp(0.5, 3)
    assert composed_epsilon([release.event], 0.0) == pytest.approx(1.5, abs=1e-3)


def test_randomized_response_refuses_unknown_values():
    with pytest.raises(PrivacyError, match="not among the categories"):
        randomized_response(["cat", "horse"], CATEGORIES, 1.0)
    with pytest.raises(PrivacyError, match="at least 2 distinct"):
        randomized_response(["cat"], ["cat"], 1.0)
    with pytest.raises(PrivacyError, match="one unit per record"):
        randomized_response(["cat"], CATEGORIES, 1.0, units=["a", "b"])


def test_clipping_bounds_norms_and_keeps_small_rows_and_directions():
    x = np.array([[3.0, -4.0], [0.1, 0.2], [0.0, 0.0]])
    l2 = clip_l2(x, 1.0)
    assert np.linalg.norm(l2, axis=1) == pytest.approx([1.0, math.sqrt(0.05), 0.0])
    assert l2[0] == pytest.approx([0.6, -0.8]) and l2[1] == pytest.approx(x[1])
    l1 = clip_l1(x, 1.0)
    assert np.abs(l1).sum(axis=1) == pytest.approx([1.0, 0.3, 0.0])
    assert l1[0] == pytest.approx([3 / 7, -4 / 7])


def test_laplace_features_noise_scale_is_twice_the_clip_over_epsilon():
    x = np.zeros((4000, 8))
    release = laplace_features(x, clip_norm=0.5, epsilon=2.0, units=[f"u{i // 2}" for i in range(4000)],
                               rng=np.random.default_rng(1))
    scale = 2 * 0.5 / 1.0  # two records per unit: 1.0 each
    assert release.values.std() == pytest.approx(math.sqrt(2) * scale, rel=0.03)
    assert release.event == PureDp(1.0, 2) and release.epsilon == 2.0


def test_gaussian_features_noise_is_calibrated_to_twice_the_clip():
    x = np.random.default_rng(2).normal(size=(3000, 16)) * 5  # rows far outside the clip
    release = gaussian_features(x, clip_norm=1.0, epsilon=1.0, delta=DELTA, rng=np.random.default_rng(3))
    sigma = analytic_gaussian_sigma(1.0, DELTA, 2.0)
    clipped = clip_l2(x, 1.0)
    assert (release.values - clipped).std() == pytest.approx(sigma, rel=0.03)
    assert release.event == SubsampledGaussian(1.0, sigma, 1, 2.0)
    assert composed_epsilon([release.event], DELTA) == pytest.approx(1.0, abs=2e-3)


def test_gaussian_features_compose_over_a_units_records():
    x = np.zeros((6, 4))
    release = gaussian_features(x, clip_norm=1.0, epsilon=1.0, delta=DELTA, units=list("aaabbc"),
                                rng=np.random.default_rng(4))
    assert release.records_per_unit == 3 and release.epsilon_per_record is None
    assert release.event.noise_multiplier == pytest.approx(analytic_gaussian_sigma(1.0, DELTA, 2 * math.sqrt(3)))
    assert composed_epsilon([release.event], DELTA) == pytest.approx(1.0, abs=2e-3)
