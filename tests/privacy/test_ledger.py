import multiprocessing
import os

import pytest

from simmim.errors import BudgetExceededError, PrivacyError
from simmim.privacy.accounting import (
    DiscreteLaplace,
    PureDp,
    SubsampledGaussian,
    composed_epsilon,
)
from simmim.privacy.ledger import COMMITTED, RELEASED, RESERVED, Ledger, ledger_url

DELTA = 1e-5
TRAINING = SubsampledGaussian(sample_rate=0.02, noise_multiplier=1.5, steps=100)


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(url):
    with Ledger(url) as opened:
        opened.set_cap("data-a", epsilon=2.0, delta=DELTA)
        yield opened


def test_reserve_then_commit_moves_budget_from_reserved_to_spent(ledger):
    reservation = ledger.reserve("data-a", "train-1", [TRAINING], DELTA, "DP-SGD run")
    assert reservation.epsilon == pytest.approx(composed_epsilon([TRAINING], DELTA))
    report = ledger.show("data-a")
    assert report.spent_epsilon == 0.0
    assert report.reserved_epsilon == pytest.approx(reservation.epsilon)
    assert report.remaining_epsilon == pytest.approx(2.0 - reservation.epsilon)
    assert [job.status for job in report.jobs] == [RESERVED]

    half = SubsampledGaussian(sample_rate=0.02, noise_multiplier=1.5, steps=50)  # stopped early
    entry = ledger.commit("train-1", [half])
    assert entry.status == COMMITTED and entry.spent_events == (half,)
    report = ledger.show("data-a")
    assert report.spent_epsilon == pytest.approx(composed_epsilon([half], DELTA))
    assert report.reserved_epsilon == pytest.approx(0.0, abs=1e-12)
    assert report.jobs[0].description == "DP-SGD run"


def test_released_job_costs_nothing(ledger):
    ledger.reserve("data-a", "train-1", [TRAINING], DELTA)
    assert ledger.release("train-1").status == RELEASED
    report = ledger.show("data-a")
    assert report.spent_epsilon == report.reserved_epsilon == 0.0
    assert report.remaining_epsilon == 2.0


def test_a_job_over_the_cap_is_refused_before_anything_is_recorded(ledger):
    ledger.reserve("data-a", "stats-1", [PureDp(1.5)], 0.0)
    with pytest.raises(BudgetExceededError, match=r"refused.*cap 2.*remaining"):
        ledger.reserve("data-a", "stats-2", [PureDp(1.0)], 0.0)
    assert [job.job_id for job in ledger.show("data-a").jobs] == ["stats-1"]


def test_open_reservations_count_against_the_cap(ledger):
    ledger.reserve("data-a", "long-job", [PureDp(1.9)], 0.0)  # never committed
    with pytest.raises(BudgetExceededError):
        ledger.reserve("data-a", "second", [PureDp(0.5)], 0.0)


def _reserve_and_die(url):
    Ledger(url).reserve("data-a", "killed-job", [TRAINING], DELTA, "killed before commit")
    os._exit(1)  # no commit, no release, no clean shutdown


def test_a_killed_jobs_reservation_survives(ledger, url):
    process = multiprocessing.get_context("fork").Process(target=_reserve_and_die, args=(url,))
    process.start()
    process.join(60)
    assert process.exitcode == 1
    with Ledger(url) as reopened:
        report = reopened.show("data-a")
        assert [(job.job_id, job.status) for job in report.jobs] == [("killed-job", RESERVED)]
        assert report.reserved_epsilon == pytest.approx(composed_epsilon([TRAINING], DELTA))
        reopened.release("killed-job")  # an operator can free it once the job is known dead
        assert reopened.show("data-a").reserved_epsilon == 0.0


def _race(url, job_id, barrier, results):
    with Ledger(url) as mine:
        barrier.wait()
        try:
            mine.reserve("data-a", job_id, [TRAINING], DELTA)
            results.put("granted")
        except BudgetExceededError:
            results.put("refused")


def test_concurrent_reservations_never_exceed_the_cap(ledger, url):
    # Composing DP-SGD jobs takes long enough that, without BEGIN IMMEDIATE, every process would
    # read the same budget and all would pass.
    cap = 1.8 * composed_epsilon([TRAINING], DELTA)
    ledger.set_cap("data-a", epsilon=cap, delta=DELTA)
    fits = max(n for n in range(1, 10) if composed_epsilon([TRAINING] * n, DELTA) <= cap)
    workers = fits + 2
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_race, args=(url, f"job-{i}", barrier, results)) for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    outcomes = [results.get(timeout=5) for _ in processes]
    assert outcomes.count("granted") == fits
    report = ledger.show("data-a")
    assert len(report.jobs) == fits and report.remaining_epsilon >= 0


def test_budget_report_equals_the_accounting_composition(ledger):
    events = {"train": [TRAINING], "stats": [DiscreteLaplace(scale=4.0, count=2)], "label": [PureDp(0.2, 3)]}
    for job_id, planned in events.items():
        ledger.reserve("data-a", job_id, planned, DELTA)
    ledger.commit("train", events["train"])
    report = ledger.show("data-a")
    assert report.spent_epsilon == pytest.approx(composed_epsilon(events["train"], DELTA))
    everything = [e for planned in events.values() for e in planned]
    assert report.spent_epsilon + report.reserved_epsilon == pytest.approx(composed_epsilon(everything, DELTA))


def test_overspending_is_recorded_and_reported(ledger):
    ledger.reserve("data-a", "train", [TRAINING], DELTA)
    longer = SubsampledGaussian(sample_rate=0.02, noise_multiplier=1.5, steps=200)
    with pytest.raises(PrivacyError, match="more than its reservation"):
        ledger.commit("train", [longer])
    assert ledger.job("train").spent_events == (longer,)
    assert ledger.show("data-a").spent_epsilon == pytest.approx(composed_epsilon([longer], DELTA))


def test_misuse_is_refused_with_a_clear_error(ledger):
    with pytest.raises(PrivacyError, match="no privacy budget.*set-cap"):
        ledger.reserve("data-b", "job", [TRAINING], DELTA)
    with pytest.raises(PrivacyError, match="cap's delta"):
        ledger.reserve("data-a", "job", [TRAINING], 1e-3)
    with pytest.raises(PrivacyError, match="no privacy events"):
        ledger.reserve("data-a", "job", [], DELTA)
    ledger.reserve("data-a", "job", [TRAINING], DELTA)
    with pytest.raises(PrivacyError, match="already in the ledger"):
        ledger.reserve("data-a", "job", [TRAINING], DELTA)
    ledger.commit("job", [TRAINING])
    with pytest.raises(PrivacyError, match="already committed"):
        ledger.release("job")
    with pytest.raises(PrivacyError, match="not in the privacy ledger"):
        ledger.commit("nobody", [TRAINING])
    with pytest.raises(PrivacyError, match="delta must be in"):
        ledger.set_cap("data-a", epsilon=1.0, delta=0.0)


def test_lowering_the_cap_below_the_spend_refuses_later_jobs(ledger):
    ledger.reserve("data-a", "stats", [PureDp(1.0)], 0.0)
    ledger.commit("stats", [PureDp(1.0)])
    ledger.set_cap("data-a", epsilon=0.5, delta=DELTA)
    assert ledger.show("data-a").remaining_epsilon < 0
    with pytest.raises(BudgetExceededError):
        ledger.reserve("data-a", "more", [PureDp(0.01)], 0.0)


def test_datasets_are_listed_and_the_url_comes_from_the_environment(ledger, url, monkeypatch):
    ledger.set_cap("data-b", epsilon=1.0, delta=DELTA)
    assert ledger.datasets() == ["data-a", "data-b"]
    monkeypatch.setenv("SIMMIM_LEDGER_URL", url)
    assert ledger_url() == url and ledger_url("sqlite:///other.db") == "sqlite:///other.db"
    monkeypatch.delenv("SIMMIM_LEDGER_URL")
    assert ledger_url() == "sqlite:///runs/privacy-ledger.db"


def test_unusable_urls_raise_privacy_errors_without_the_password():
    with pytest.raises(PrivacyError, match="bad privacy ledger URL"):
        Ledger("not a url")
    with pytest.raises(PrivacyError, match=r"postgresql://user:\*\*\*@") as caught:
        Ledger("postgresql://user:secret@localhost:1/ledger")
    assert "secret" not in str(caught.value)
