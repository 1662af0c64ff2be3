import json

import pytest
import typer
from typer.testing import CliRunner

from simmim.config import DataConfig
from simmim.data import formats, synthetic
from simmim.data.grammar import vocabulary
from simmim.data.records import COLOURS
from simmim.data.splits import build_splits
from simmim.errors import BudgetExceededError, PrivacyError
from simmim.privacy.accounting import calibrate_noise, epsilon
from simmim.privacy.commands import OTHER_WORD, budget_app, privacy_app, stats
from simmim.privacy.ledger import COMMITTED, Ledger

runner = CliRunner()
TRAIN_SIZE = 120


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(scope="module")
def fingerprint():
    return build_splits(DataConfig(train_size=TRAIN_SIZE, val_size=0, test_size=0)).fingerprint()


@pytest.fixture(scope="module")
def stats_app():
    app = typer.Typer()
    app.command()(stats)
    return app


def test_epsilon_prints_json_with_the_inputs():
    result = runner.invoke(privacy_app, ["epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1.5",
                                         "--steps", "500", "--delta", "1e-5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["epsilon"] == pytest.approx(epsilon(sample_rate=0.01, noise_multiplier=1.5, steps=500, delta=1e-5))
    assert out | {"epsilon": None} == {"epsilon": None, "sample_rate": 0.01, "noise_multiplier": 1.5, "steps": 500,
                                       "delta": 1e-5, "accountant": "pld"}


def test_epsilon_prints_a_human_line_and_takes_rdp():
    result = runner.invoke(privacy_app, ["epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1.5",
                                         "--steps", "500", "--delta", "1e-5", "--accountant", "rdp"])
    assert result.exit_code == 0 and result.output.startswith("epsilon = ") and "rdp" in result.output


def test_calibrate_from_epochs():
    result = runner.invoke(privacy_app, ["calibrate", "--epsilon", "2", "--delta", "1e-5", "--sample-rate", "0.02",
                                         "--epochs", "4", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["steps"] == 200 and out["epochs"] == 4
    assert out["noise_multiplier"] == calibrate_noise(epsilon=2, delta=1e-5, sample_rate=0.02, steps=200)


@pytest.mark.parametrize(("args", "message"), [
    (["epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1", "--steps", "10", "--delta", "2"],
     "delta must be in"),
    (["calibrate", "--epsilon", "1", "--delta", "1e-5", "--sample-rate", "0.01", "--steps", "10", "--epochs", "1"],
     "exactly one of --steps and --epochs"),
    (["epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5",
      "--accountant", "prv"], "accountant must be"),
])
def test_bad_options_raise_one_line_privacy_errors(args, message):
    result = runner.invoke(privacy_app, args)
    assert isinstance(result.exception, PrivacyError) and message in str(result.exception)
    assert "\n" not in str(result.exception)


def test_budget_set_cap_and_show(db):
    set_cap = runner.invoke(budget_app, ["set-cap", "--dataset", "snap-1", "--epsilon", "3", "--delta", "1e-6",
                                         "--db", db])
    assert set_cap.exit_code == 0 and "remaining 3.0000" in set_cap.output
    shown = json.loads(runner.invoke(budget_app, ["show", "--dataset", "snap-1", "--db", db, "--json"]).output)
    assert shown == [{"dataset": "snap-1", "epsilon_cap": 3.0, "delta_cap": 1e-6, "spent_epsilon": 0.0,
                      "reserved_epsilon": 0.0, "remaining_epsilon": 3.0, "jobs": []}]
    listing = runner.invoke(budget_app, ["show", "--db", db])
    assert listing.exit_code == 0 and listing.output.startswith("snap-1: cap epsilon 3 at delta 1e-06")


def test_budget_show_uses_the_environment_url(db, monkeypatch):
    monkeypatch.setenv("SIMMIM_LEDGER_URL", db)
    runner.invoke(budget_app, ["set-cap", "--dataset", "snap-2", "--epsilon", "1", "--delta", "1e-5"])
    assert "snap-2" in runner.invoke(budget_app, ["show"]).output
    unknown = runner.invoke(budget_app, ["show", "--dataset", "nope"])
    assert isinstance(unknown.exception, PrivacyError) and "set-cap" in str(unknown.exception)


def test_stats_needs_a_budget_for_the_datasets_fingerprint(db, fingerprint, stats_app):
    result = runner.invoke(stats_app, ["--epsilon", "1", "--train-size", str(TRAIN_SIZE), "--db", db])
    assert isinstance(result.exception, PrivacyError) and fingerprint in str(result.exception)


def test_stats_releases_histograms_and_charges_the_ledger(db, fingerprint, stats_app):
    with Ledger(db) as ledger:
        ledger.set_cap(fingerprint, epsilon=1.5, delta=1e-5)
    result = runner.invoke(stats_app, ["--epsilon", "1", "--train-size", str(TRAIN_SIZE), "--db", db,
                                       "--job-id", "stats-1", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["dataset"] == fingerprint and out["job_id"] == "stats-1"
    assert list(out["histograms"]) == ["caption_words", "shape", "colour", "size", "objects"]
    assert list(out["histograms"]["caption_words"]) == [*vocabulary(), OTHER_WORD]
    assert list(out["histograms"]["colour"]) == list(COLOURS)
    assert out["job_epsilon"] == pytest.approx(1.0, abs=1e-3)
    with Ledger(db) as ledger:
        report = ledger.show(fingerprint)
    assert [(job.job_id, job.status) for job in report.jobs] == [("stats-1", COMMITTED)]
    assert report.remaining_epsilon == pytest.approx(out["remaining_epsilon"])

    human = runner.invoke(stats_app, ["--epsilon", "0.2", "--train-size", str(TRAIN_SIZE), "--db", db,
                                      "--unit", "record"])
    assert human.exit_code == 0 and "charged epsilon 0.2" in human.output
    refused = runner.invoke(stats_app, ["--epsilon", "2", "--train-size", str(TRAIN_SIZE), "--db", db])
    assert isinstance(refused.exception, BudgetExceededError) and "remaining" in str(refused.exception)
    with Ledger(db) as ledger:
        assert len(ledger.show(fingerprint).jobs) == 2


def test_stats_refuses_an_unknown_unit(db, stats_app):
    result = runner.invoke(stats_app, ["--epsilon", "1", "--unit", "household", "--db", db])
    assert isinstance(result.exception, PrivacyError) and "--unit" in str(result.exception)


def test_stats_on_a_dataset_on_disk_releases_caption_words_only(db, tmp_path, stats_app):
    formats.write_dataset(synthetic.generate(30, seed=1), tmp_path / "data.csv", "csv")
    dataset = build_splits(DataConfig(source=str(tmp_path / "data.csv"))).fingerprint()
    with Ledger(db) as ledger:
        ledger.set_cap(dataset, epsilon=1.0, delta=1e-5)
    result = runner.invoke(stats_app, ["--epsilon", "0.5", "--data", str(tmp_path / "data.csv"), "--db", db,
                                       "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["dataset"] == dataset and list(out["histograms"]) == ["caption_words"]
