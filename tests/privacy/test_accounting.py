import math
import time

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import given, settings
from hypothesis import strategies as st

from simmim.errors import PrivacyError
from simmim.privacy import accounting
from simmim.privacy.accounting import (
    DiscreteGaussian,
    DiscreteLaplace,
    PureDp,
    SubsampledGaussian,
    calibrate_noise,
    composed_epsilon,
    epsilon,
    event_from_dict,
    event_to_dict,
    steps_for_epochs,
)

MNIST_Q = 256 / 60000  # TF Privacy / Abadi et al. MNIST setting: batch 256 of 60,000
DELTA = 1e-5
# The classic RDP orders of TF Privacy's tutorials, for reproducing their published epsilons.
TF_PRIVACY_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def classic_rdp_epsilon(noise, epochs):
    """TF Privacy's published conversion: eps = min over orders of rdp(a) + log(1/delta) / (a - 1)."""
    steps = steps_for_epochs(epochs, MNIST_Q)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(MNIST_Q, dp_accounting.GaussianDpEvent(noise)), steps)
    rdp = rdp_privacy_accountant.RdpAccountant(TF_PRIVACY_ORDERS).compose(event)
    return min(r + math.log(1 / DELTA) / (a - 1) for a, r in zip(rdp.orders, rdp.rdp))


@pytest.mark.parametrize(("noise", "epochs", "published"), [(1.12, 60, 2.92), (1.2, 10, 1.20)])
def test_rdp_reproduces_tf_privacy_published_epsilons(noise, epochs, published):
    # tensorflow/privacy tutorials/README.md, "Select Parameters" table (delta = 1e-5).
    assert classic_rdp_epsilon(noise, epochs) == pytest.approx(published, abs=0.01)


def test_mnist_regression_values():
    # q = 256/60000, sigma = 1.1, 60 epochs, delta = 1e-5. TF Privacy's classic conversion gives
    # the familiar 3.01; dp_accounting's RDP (more orders, sharper conversion) 2.597; PLD 2.382.
    steps = steps_for_epochs(60, MNIST_Q)
    assert steps == 14063
    assert classic_rdp_epsilon(1.1, 60) == pytest.approx(3.01, abs=0.01)
    rdp = epsilon(sample_rate=MNIST_Q, noise_multiplier=1.1, steps=steps, delta=DELTA, accountant="rdp")
    pld = epsilon(sample_rate=MNIST_Q, noise_multiplier=1.1, steps=steps, delta=DELTA)
    assert rdp == pytest.approx(2.5967, abs=5e-4)
    assert pld == pytest.approx(2.3818, abs=5e-4)


@pytest.mark.parametrize(("q", "noise", "steps"),
                         [(0.01, 1.0, 1000), (0.1, 2.0, 200), (1.0, 3.0, 10), (0.004, 0.8, 3000)])
def test_pld_is_tighter_than_rdp_but_close(q, noise, steps):
    pld = epsilon(sample_rate=q, noise_multiplier=noise, steps=steps, delta=DELTA)
    rdp = epsilon(sample_rate=q, noise_multiplier=noise, steps=steps, delta=DELTA, accountant="rdp")
    assert pld <= rdp < 1.5 * pld


def test_full_batch_single_step_is_the_exact_gaussian_mechanism():
    # No subsampling, one step: the Gaussian mechanism, whose exact epsilon is known in closed form.
    exact = dp_accounting.get_epsilon_gaussian(2.0, DELTA)
    ours = epsilon(sample_rate=1.0, noise_multiplier=2.0, steps=1, delta=DELTA)
    assert exact <= ours <= exact + 1e-3


def test_sensitivity_two_halves_the_noise_multiplier():
    doubled = epsilon(sample_rate=0.02, noise_multiplier=2.4, steps=300, delta=DELTA, sensitivity=2.0)
    plain = epsilon(sample_rate=0.02, noise_multiplier=1.2, steps=300, delta=DELTA)
    assert doubled == pytest.approx(plain, rel=1e-9)


def test_no_steps_cost_nothing():
    assert epsilon(sample_rate=0.1, noise_multiplier=1.0, steps=0, delta=DELTA) == 0.0


# Below noise ~0.8 at high sampling rates dp_accounting's RDP drops orders it cannot compute
# (it logs a warning) and its epsilon, by then in the thousands, can dip by a few percent.
@settings(max_examples=15, deadline=None)
@given(q=st.floats(0.001, 0.6), noise=st.floats(0.8, 10.0), steps=st.integers(1, 5000))
def test_rdp_monotone_in_noise_steps_and_rate(q, noise, steps):
    def eps(q=q, noise=noise, steps=steps):
        return epsilon(sample_rate=q, noise_multiplier=noise, steps=steps, delta=DELTA, accountant="rdp")

    base = eps()
    assert eps(noise=noise * 1.2) <= base
    assert eps(steps=steps * 2) >= base
    assert eps(q=q * 1.5) >= base


@settings(max_examples=5, deadline=None)
@given(q=st.floats(0.01, 0.2), noise=st.floats(1.5, 4.0), steps=st.integers(1, 50))
def test_pld_monotone_in_noise_steps_and_rate(q, noise, steps):
    def eps(q=q, noise=noise, steps=steps):
        return epsilon(sample_rate=q, noise_multiplier=noise, steps=steps, delta=DELTA)

    base = eps()
    assert eps(noise=noise * 1.2) <= base
    assert eps(steps=steps * 2) >= base
    assert eps(q=q * 1.5) >= base


@pytest.mark.parametrize(("target", "q", "steps", "accountant", "sensitivity"), [
    (1.0, 0.01, 1000, "pld", 1.0),
    (0.5, 0.05, 100, "pld", 1.0),
    (1.0, 0.02, 300, "pld", 2.0),
    (3.0, 0.01, 2000, "rdp", 1.0),
])
def test_calibration_is_the_smallest_noise_that_meets_the_target(target, q, steps, accountant, sensitivity):
    noise = calibrate_noise(epsilon=target, delta=DELTA, sample_rate=q, steps=steps, accountant=accountant,
                            sensitivity=sensitivity)
    assert noise == round(noise, 3)

    def eps(sigma):
        return epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=DELTA, accountant=accountant,
                       sensitivity=sensitivity)

    assert eps(noise) <= target < eps(round(noise - 0.001, 3))


def test_calibration_is_fast_for_typical_values():
    accounting._dp_sgd_epsilon.cache_clear()
    start = time.perf_counter()
    noise = calibrate_noise(epsilon=2.0, delta=DELTA, sample_rate=0.01, steps=10_000)
    assert time.perf_counter() - start < 5.0
    assert 1.5 < noise < 3.0


def test_calibration_refuses_targets_outside_the_noise_range():
    with pytest.raises(PrivacyError, match="larger epsilon"):
        calibrate_noise(epsilon=1e-6, delta=DELTA, sample_rate=1.0, steps=100_000)
    with pytest.raises(PrivacyError, match="smaller epsilon"):
        calibrate_noise(epsilon=1e6, delta=DELTA, sample_rate=0.01, steps=10)


def test_steps_for_epochs_rounds_up_but_ignores_float_noise():
    assert steps_for_epochs(3, 0.1) == 30
    assert steps_for_epochs(1, 0.3) == 4
    assert steps_for_epochs(0.001, 0.5) == 1


@pytest.mark.parametrize("kwargs", [
    {"delta": 0.0}, {"delta": 1.0}, {"sample_rate": 0.0}, {"sample_rate": 1.5}, {"noise_multiplier": 0.0},
    {"steps": -1}, {"steps": 2.5}, {"accountant": "prv"}, {"sensitivity": -1.0},
])
def test_bad_parameters_raise_privacy_error(kwargs):
    params = {"sample_rate": 0.01, "noise_multiplier": 1.0, "steps": 10, "delta": DELTA} | kwargs
    with pytest.raises(PrivacyError):
        epsilon(**params)


def test_one_job_composes_to_its_own_epsilon():
    job = SubsampledGaussian(0.02, 1.5, 200)
    assert composed_epsilon([job], DELTA) == pytest.approx(
        epsilon(sample_rate=0.02, noise_multiplier=1.5, steps=200, delta=DELTA), rel=1e-9)


def test_composition_of_jobs_matches_one_dp_accounting_pld_accountant():
    jobs = [SubsampledGaussian(0.02, 1.5, 200), SubsampledGaussian(0.05, 3.0, 100, sensitivity=2.0)]
    tracker = pld_privacy_accountant.PLDAccountant()
    for job in jobs:
        tracker.compose(dp_accounting.PoissonSampledDpEvent(
            job.sample_rate, dp_accounting.GaussianDpEvent(job.noise_multiplier / job.sensitivity)), job.steps)
    total = composed_epsilon(jobs, DELTA)
    assert total == pytest.approx(tracker.get_epsilon(DELTA), rel=1e-6)
    assert total < sum(composed_epsilon([job], DELTA) for job in jobs)


def test_pure_dp_events_compose_to_the_sum_at_delta_zero_and_below_it_otherwise():
    assert composed_epsilon([PureDp(0.5, count=3)], 0.0) == pytest.approx(1.5, abs=1e-3)
    assert composed_epsilon([PureDp(0.5, count=3)], DELTA) < 1.5


def test_pure_dp_is_accounted_as_the_worst_pure_mechanism():
    # Laplace is one epsilon-DP mechanism; the generic event must never be cheaper than it.
    laplace = pld_privacy_accountant.PLDAccountant().compose(dp_accounting.LaplaceDpEvent(1.0)).get_epsilon(0.01)
    assert composed_epsilon([PureDp(1.0)], 0.01) >= laplace


def test_discrete_events_match_their_pure_epsilon_at_delta_zero():
    assert composed_epsilon([DiscreteLaplace(scale=4.0, count=2)], 0.0) == pytest.approx(0.5, abs=1e-3)
    assert composed_epsilon([DiscreteLaplace(scale=4.0, sensitivity=2)], 0.0) == pytest.approx(0.5, abs=1e-3)
    assert composed_epsilon([DiscreteGaussian(sigma=4.0)], DELTA) < composed_epsilon([DiscreteGaussian(4.0, 1, 2)],
                                                                                      DELTA)


@pytest.mark.parametrize("event", [SubsampledGaussian(0.1, 1.0, 10, 2.0), DiscreteLaplace(2.5, 1, 3),
                                   DiscreteGaussian(3.0), PureDp(0.7, 2)])
def test_events_round_trip_through_json_form(event):
    assert event_from_dict(event_to_dict(event)) == event


def test_unknown_event_kind_is_refused():
    with pytest.raises(PrivacyError, match="unknown privacy event kind"):
        event_from_dict({"kind": "magic", "epsilon": 1.0})
    with pytest.raises(PrivacyError, match="bad pure_dp"):
        event_from_dict({"kind": "pure_dp", "eps": 1.0})


@settings(max_examples=200, deadline=None)
@given(exponent=st.floats(0.3, 3.0), scale=st.floats(0.1, 1000.0), lowest=st.integers(1, 50),
       highest=st.integers(60, 5000), start=st.integers(0, 6000), first_step=st.integers(1, 300),
       position=st.floats(0.0, 1.0), plateaus=st.booleans())
def test_calibration_search_finds_the_smallest_grid_point(exponent, scale, lowest, highest, start, first_step,
                                                          position, plateaus):
    def power_law(k):
        value = scale * k ** -exponent
        return round(value, 2) if plateaus else value

    target = power_law(highest) + position * (power_law(lowest + 1) - power_law(highest))
    brute_force = next(k for k in range(lowest + 1, highest + 1) if power_law(k) <= target)
    assert accounting._smallest_meeting(power_law, target, lowest, highest, start=start,
                                        first_step=first_step) == brute_force
