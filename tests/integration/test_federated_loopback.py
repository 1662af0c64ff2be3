"""A real Flower deployment on loopback: a SuperLink and SuperNodes as separate processes.

The server's sum is checked against the parties' updates recomputed here: with one torch thread a
party's update is reproducible bit for bit, so what the server learned through secure aggregation
(or Paillier) must equal the plain mean of the clipped updates up to the quantisation step.
"""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from simmim.cli import app
from simmim.federated.deployment import LoopbackDeployment
from simmim.federated.dp import ClientLevelDp
from simmim.federated.local import Federation, local_update
from simmim.federated.settings import FedSettings

pytestmark = pytest.mark.slow


def _weights(run: Path, round_index: int) -> np.ndarray:
    return np.load(run / "global" / f"round-{round_index:04d}.npy")


def _expected_mean(settings: FedSettings, start: np.ndarray, round_index: int, parties) -> np.ndarray:
    federation = Federation.from_settings(settings)
    updates = [local_update(federation, start, federation.partition(p), round_index=round_index, party=p)[0]
               for p in parties]
    return np.mean(updates, axis=0)


@pytest.fixture(scope="module")
def three_parties(tmp_path_factory):
    with LoopbackDeployment(3, tmp_path_factory.mktemp("fed3")) as deployment:
        yield deployment


@pytest.mark.parametrize("aggregation, tolerance", [("plain", 1e-6), ("secagg", 1e-6), ("paillier", 1e-6)])
def test_rounds_complete_the_model_improves_and_the_server_sum_is_exact(three_parties, tmp_path, aggregation,
                                                                        tolerance):
    rounds = 1 if aggregation == "paillier" else 2
    settings = FedSettings(clients=3, rounds=rounds, local_steps=15, update_clip=10.0, aggregation=aggregation,
                           round_timeout=120)
    result = three_parties.run(settings, out=tmp_path / "run")
    assert result["rounds_completed"] == rounds and result["epsilon"] is None
    assert all(r["contributors"] == 3 for r in result["rounds"])
    assert result["metrics"]["test_loss"] < result["initial_metrics"]["test_loss"] - 1.0
    if aggregation == "secagg":
        assert all(r["upload_bytes_per_parameter"] == 4.0 for r in result["rounds"])
    start = _weights(tmp_path / "run", 0)
    step = _weights(tmp_path / "run", 1) - start
    np.testing.assert_allclose(step, _expected_mean(settings, start, 0, range(3)), atol=tolerance)


def test_a_supernode_killed_mid_round_leaves_a_correct_round_from_the_survivors(tmp_path):
    settings = FedSettings(clients=4, rounds=2, local_steps=5, update_clip=10.0, aggregation="secagg",
                           round_timeout=90)
    with LoopbackDeployment(4, tmp_path / "fed4") as deployment:
        log = tmp_path / "fed4" / "logs" / "supernode-3.log"
        killed = threading.Event()

        def kill_when_round_two_starts():
            # Round 1 runs four messages on every node (train, share, mask, unmask); the fifth is round 2's training.
            while not killed.is_set():
                if log.exists() and log.read_text().count("Start `flwr-clientapp` process") >= 5:
                    deployment.kill_node(3)
                    killed.set()
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_when_round_two_starts, daemon=True)
        watcher.start()
        try:
            result = deployment.run(settings, out=tmp_path / "run")
        finally:
            killed.set()
    first, second = result["rounds"]
    assert first["contributors"] == 4, first and second["sampled"] == 4 and second["contributors"] == 3
    assert result["rounds_completed"] == 2
    run = tmp_path / "run"
    step = _weights(run, 2) - _weights(run, 1)
    np.testing.assert_allclose(step, _expected_mean(settings, _weights(run, 1), 1, range(3)), atol=1e-6)


def test_cli_runs_a_private_secure_run_reports_epsilon_and_stops_at_the_budget(tmp_path):
    sigma = 1.0
    dp = ClientLevelDp(noise_multiplier=sigma, sample_rate=1.0, delta=1e-5, budget=0)
    budget = (dp.epsilon(1) + dp.epsilon(2)) / 2  # room for one round, not two
    outcome = CliRunner().invoke(app, ["fed", "run", "--clients", "3", "--rounds", "3", "--secure-agg",
                                       "--noise-multiplier", str(sigma), "--epsilon", str(budget),
                                       "--local-steps", "3", "--out", str(tmp_path), "--json"])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert summary["rounds_completed"] == 1 and summary["stopped"].startswith("budget")
    assert summary["epsilon"] == pytest.approx(dp.epsilon(1)) and summary["epsilon"] <= budget
    assert summary["delta"] == 1e-5 and "test_loss" in summary["metrics"]
    assert summary["rounds"][0]["epsilon"] == pytest.approx(dp.epsilon(1))
