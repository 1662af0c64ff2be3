"""Settings, client-level DP-FedAvg and the local computations, without Flower."""

import tomllib
from importlib import resources

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from simmim.errors import ConfigError
from simmim.federated.dp import ClientLevelDp, sample_parties
from simmim.federated.local import Federation, clip_update, load_parameter_vector, local_update, parameter_vector
from simmim.federated.settings import FedSettings


def test_settings_survive_flowers_run_config():
    settings = FedSettings(clients=5, rounds=7, aggregation="secagg", epsilon=3.5, delta=1e-6, out="/tmp/x")
    assert FedSettings.from_run_config(settings.to_run_config()) == settings


def test_the_flower_app_declares_every_setting_with_its_default():
    """Flower refuses run-config keys the app does not declare: the two lists must match."""
    text = (resources.files("simmim.federated") / "flower_app" / "pyproject.toml").read_text()
    assert tomllib.loads(text)["tool"]["flwr"]["app"]["config"] == FedSettings().to_run_config()


@pytest.mark.parametrize("kwargs, field", [
    ({"clients": 0}, "clients"), ({"aggregation": "magic"}, "aggregation"), ({"sample_rate": 0.0}, "sample_rate"),
    ({"update_clip": -1.0}, "update_clip"), ({"delta": 1.5}, "delta"), ({"epsilon": -1.0}, "epsilon")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        FedSettings(**kwargs)


def _reference_epsilon(q: float, sigma: float, rounds: int, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), rounds)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("q, sigma, rounds", [(1.0, 1.1, 5), (0.3, 0.9, 20)])
def test_epsilon_matches_dp_accountings_reference(q, sigma, rounds):
    dp = ClientLevelDp(noise_multiplier=sigma, sample_rate=q, delta=1e-5, budget=0)
    assert dp.epsilon(rounds) == pytest.approx(_reference_epsilon(q, sigma, rounds, 1e-5), rel=2e-3)


def test_a_budget_alone_calibrates_noise_so_that_every_round_fits():
    settings = FedSettings(rounds=10, epsilon=4.0, sample_rate=0.5)
    dp = ClientLevelDp.for_run(settings)
    assert dp.private and dp.allows(10) and dp.epsilon(10) <= 4.0
    assert _reference_epsilon(0.5, dp.noise_multiplier, 10, settings.delta) <= 4.0 + 1e-2


def test_the_budget_stops_a_run_before_the_round_that_would_exceed_it():
    dp = ClientLevelDp(noise_multiplier=1.0, sample_rate=1.0, delta=1e-5, budget=0)
    between = (dp.epsilon(2) + dp.epsilon(3)) / 2
    capped = ClientLevelDp(noise_multiplier=1.0, sample_rate=1.0, delta=1e-5, budget=between)
    assert capped.allows(2) and not capped.allows(3)


def test_without_noise_there_is_no_guarantee_and_the_average_is_the_mean():
    dp = ClientLevelDp(noise_multiplier=0.0, sample_rate=1.0, delta=1e-5, budget=0)
    assert dp.epsilon(3) is None
    total = np.array([3.0, -6.0])
    assert np.array_equal(dp.noisy_average(total, clip=1.0, parties=3), [1.0, -2.0])


def test_dp_noise_has_the_stated_scale_and_a_fixed_denominator():
    dp = ClientLevelDp(noise_multiplier=2.0, sample_rate=0.5, delta=1e-5, budget=0)
    noisy = dp.noisy_average(np.zeros(200_000), clip=3.0, parties=4)
    # std = sigma * clip / (q * parties) = 2 * 3 / 2 = 3
    assert np.std(noisy) == pytest.approx(3.0, rel=0.02)
    assert abs(np.mean(noisy)) < 0.05


def test_poisson_sampling_takes_everyone_at_rate_one_and_about_q_otherwise():
    nodes = list(range(1, 2001))
    assert sample_parties(nodes, 1.0) == nodes
    assert 800 < len(sample_parties(nodes, 0.5)) < 1200


def test_clipping_bounds_the_update_norm():
    update = np.full(100, 1.0, dtype=np.float32)
    clipped, norm = clip_update(update, 2.0)
    assert norm == pytest.approx(10.0) and np.linalg.norm(clipped) == pytest.approx(2.0, rel=1e-6)
    small, _ = clip_update(update * 0.01, 2.0)
    assert np.array_equal(small, update * 0.01)


def test_partitions_are_disjoint_and_cover_the_training_records():
    federation = Federation.from_settings(FedSettings(clients=3))
    parts = [federation.partition(i) for i in range(3)]
    ids = [r.record_id for part in parts for r in part]
    assert len(ids) == len(set(ids)) == federation.cfg.data.train_size
    with pytest.raises(ConfigError, match="partition 3"):
        federation.partition(3)


def test_a_local_update_is_clipped_reproducible_and_fits_the_model():
    settings = FedSettings(clients=2, local_steps=3, update_clip=0.5)
    federation = Federation.from_settings(settings)
    model = federation.initial_model()
    start = parameter_vector(model)
    records = federation.partition(1)
    first, metrics = local_update(federation, start, records, round_index=0, party=1)
    again, _ = local_update(federation, start, records, round_index=0, party=1)
    assert np.array_equal(first, again)
    assert np.linalg.norm(first) <= 0.5 + 1e-6 and metrics["update_norm"] > 0.5
    load_parameter_vector(model, start + first)
    assert np.allclose(parameter_vector(model), start + first)
    with pytest.raises(ConfigError, match="does not fit"):
        load_parameter_vector(model, start[:-1])
