"""Command-line front ends of the privacy package: `simmim privacy`, `simmim budget`, `simmim stats`.

Thin shells over `accounting`, `ledger` and `mechanisms`; errors are `SimMIMError`s, which the
`simmim` entry point shows as one line. Those modules are imported inside the commands, as in
`simmim.cli`: dp-accounting alone takes about a second to import.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from simmim.data.records import Record
    from simmim.privacy.ledger import BudgetReport

privacy_app = typer.Typer(no_args_is_help=True, help="Privacy accounting: epsilon of a DP-SGD run, noise for a target.")
budget_app = typer.Typer(no_args_is_help=True, help="The privacy budget ledger: caps per dataset, and what jobs spent.")

JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]
DbOption = Annotated[str | None, typer.Option("--db", help="ledger URL (default: $SIMMIM_LEDGER_URL or "
                                                             "sqlite:///runs/privacy-ledger.db)")]
DeltaOption = Annotated[float, typer.Option("--delta", help="target delta, in (0, 1)")]
SampleRateOption = Annotated[float, typer.Option("--sample-rate", help="Poisson sampling probability per step")]
AccountantOption = Annotated[str, typer.Option("--accountant", help="pld (tight) or rdp (upper bound)")]
OTHER_WORD = "<other>"  # bin for caption words outside the public vocabulary
UNITS = ("subject", "record")


@privacy_app.command("epsilon")
def epsilon_command(sample_rate: SampleRateOption,
                    noise_multiplier: Annotated[float, typer.Option("--noise-multiplier", help="noise std / clip")],
                    steps: Annotated[int, typer.Option("--steps", help="number of steps")],
                    delta: DeltaOption, accountant: AccountantOption = "pld", as_json: JsonOption = False) -> None:
    """Epsilon of DP-SGD with Poisson sampling."""
    from simmim.privacy.accounting import epsilon

    value = epsilon(sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps, delta=delta,
                    accountant=accountant)
    if as_json:
        typer.echo(json.dumps({"epsilon": value, "sample_rate": sample_rate, "noise_multiplier": noise_multiplier,
                               "steps": steps, "delta": delta, "accountant": accountant}))
    else:
        typer.echo(f"epsilon = {value:.4f} at delta = {delta:g} ({accountant}; q = {sample_rate:g}, "
                   f"noise multiplier {noise_multiplier:g}, {steps} steps)")


@privacy_app.command("calibrate")
def calibrate_command(target_epsilon: Annotated[float, typer.Option("--epsilon", help="target epsilon")],
                      delta: DeltaOption, sample_rate: SampleRateOption,
                      steps: Annotated[int | None, typer.Option("--steps", help="number of steps")] = None,
                      epochs: Annotated[float | None, typer.Option("--epochs", help="or: passes over the data")] = None,
                      accountant: AccountantOption = "pld", as_json: JsonOption = False) -> None:
    """The smallest noise multiplier that meets a target (epsilon, delta)."""
    from simmim.errors import PrivacyError
    from simmim.privacy.accounting import calibrate_noise, steps_for_epochs

    if (steps is None) == (epochs is None):
        raise PrivacyError("give exactly one of --steps and --epochs")
    if steps is None:
        steps = steps_for_epochs(epochs, sample_rate)
    noise = calibrate_noise(epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=steps,
                            accountant=accountant)
    if as_json:
        typer.echo(json.dumps({"noise_multiplier": noise, "epsilon": target_epsilon, "delta": delta,
                               "sample_rate": sample_rate, "steps": steps, "epochs": epochs,
                               "accountant": accountant}))
    else:
        typer.echo(f"noise multiplier = {noise:.3f} for epsilon <= {target_epsilon:g} at delta = {delta:g} "
                   f"({accountant}; q = {sample_rate:g}, {steps} steps)")


@budget_app.command("show")
def budget_show(dataset: Annotated[str | None, typer.Option("--dataset", help="dataset id; default: all")] = None,
                db: DbOption = None, as_json: JsonOption = False) -> None:
    """A dataset's cap, spent, reserved and remaining epsilon, and its jobs."""
    from simmim.privacy.ledger import Ledger

    with Ledger(db) as ledger:
        reports = [ledger.show(name) for name in ([dataset] if dataset else ledger.datasets())]
    if as_json:
        typer.echo(json.dumps([_report_dict(report) for report in reports]))
        return
    if not reports:
        typer.echo(f"no dataset has a privacy budget in {ledger.url}")
    for report in reports:
        typer.echo(f"{report.dataset}: cap epsilon {report.epsilon_cap:g} at delta {report.delta_cap:g}; "
                   f"spent {report.spent_epsilon:.4f}, reserved {report.reserved_epsilon:.4f}, "
                   f"remaining {report.remaining_epsilon:.4f}")
        for job in report.jobs:
            typer.echo(f"  {job.job_id}  {job.status:<9}  epsilon {job.epsilon:.4f} at delta {job.delta:g}  "
                       f"{job.description}")


@budget_app.command("set-cap")
def budget_set_cap(dataset: Annotated[str, typer.Option("--dataset", help="dataset id (snapshot id or fingerprint)")],
                   cap_epsilon: Annotated[float, typer.Option("--epsilon", help="total epsilon allowed")],
                   delta: Annotated[float, typer.Option("--delta", help="delta of the cap")],
                   db: DbOption = None) -> None:
    """Sets or changes a dataset's privacy budget."""
    from simmim.privacy.ledger import Ledger

    with Ledger(db) as ledger:
        ledger.set_cap(dataset, epsilon=cap_epsilon, delta=delta)
        report = ledger.show(dataset)
    typer.echo(f"{dataset}: cap epsilon {cap_epsilon:g} at delta {delta:g}; remaining {report.remaining_epsilon:.4f}")


def stats(total_epsilon: Annotated[float, typer.Option("--epsilon", help="epsilon for all histograms together")],
          data: Annotated[str, typer.Option("--data", help="'synthetic' or a dataset path")] = "synthetic",
          db: DbOption = None,
          unit: Annotated[str, typer.Option("--unit", help="privacy unit: subject or record")] = "subject",
          bins_per_unit: Annotated[int, typer.Option("--bins-per-unit", help="most bins one unit counts in")] = 4,
          train_size: Annotated[int, typer.Option("--train-size", help="synthetic records")] = 4000,
          seed: Annotated[int, typer.Option("--seed", help="synthetic data seed")] = 0,
          job_id: Annotated[str | None, typer.Option("--job-id", help="ledger job id; default: random")] = None,
          as_json: JsonOption = False) -> None:
    """Release DP histograms of a dataset's training records, charged to its privacy budget.

    Caption words (over the public synthetic vocabulary, other words pooled) and, for synthetic
    data, object shapes, colours, sizes and counts. Each unit counts at most once per bin and in
    at most --bins-per-unit bins of each histogram; the epsilon is split evenly between histograms.
    The dataset is named by its fingerprint, which needs a budget (`simmim budget set-cap`).
    """
    from simmim.config import DataConfig
    from simmim.data.splits import build_splits
    from simmim.errors import PrivacyError
    from simmim.privacy.ledger import Ledger
    from simmim.privacy.mechanisms import histogram_event
    from simmim.privacy.samplers import to_fraction

    if unit not in UNITS:
        raise PrivacyError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if not total_epsilon > 0:
        raise PrivacyError(f"--epsilon must be positive, got {total_epsilon}")
    synthetic = data == "synthetic"
    splits = build_splits(DataConfig(train_size=train_size, val_size=0, test_size=0, seed=seed) if synthetic
                          else DataConfig(source=data))
    dataset = splits.fingerprint()
    # Which histograms exist depends on the kind of source only, never on the records.
    histograms = _histograms(synthetic=synthetic)
    share = to_fraction(total_epsilon) / len(histograms)
    caps = {name: min(bins_per_unit, len(domain)) for name, (domain, _) in histograms.items()}
    events = [histogram_event(share, bins_per_unit=caps[name]) for name in histograms]
    job = job_id or f"stats-{uuid.uuid4().hex[:12]}"
    with Ledger(db) as ledger:
        reservation = ledger.reserve(dataset, job, events, 0.0,
                                     f"DP statistics of {data}: {', '.join(histograms)} (unit {unit})")
        try:
            released = _release_histograms(splits.train + splits.video_train, histograms, caps, share, unit)
        except BaseException:
            ledger.release(job)  # nothing was published, so nothing was spent
            raise
        ledger.commit(job, events)
        remaining = ledger.show(dataset).remaining_epsilon
    if as_json:
        typer.echo(json.dumps({"dataset": dataset, "job_id": job, "epsilon": total_epsilon,
                               "job_epsilon": reservation.epsilon, "unit": unit, "bins_per_unit": bins_per_unit,
                               "histograms": released, "remaining_epsilon": remaining}))
        return
    for name, values in released.items():
        typer.echo(f"{name}: " + ", ".join(f"{b}={n}" for b, n in values.items()))
    typer.echo(f"charged epsilon {reservation.epsilon:.4f} to dataset {dataset} (job {job}); "
               f"remaining {remaining:.4f}")


def _histograms(*, synthetic: bool) -> dict[str, tuple[list[str], Callable[[Record], set[str]]]]:
    """Each histogram's public domain, and the bins one record touches."""
    from simmim.data.grammar import MAX_OBJECTS, vocabulary
    from simmim.data.records import COLOURS, SHAPES, SIZES
    from simmim.data.tokenizer import split_words

    words = set(vocabulary())

    def caption_words(record: Record) -> set[str]:
        return {w if w in words else OTHER_WORD for caption in record.captions for w in split_words(caption)}

    histograms = {"caption_words": ([*sorted(words), OTHER_WORD], caption_words)}
    if synthetic:  # synthetic records carry their scene
        histograms |= {
            "shape": (list(SHAPES), lambda r: {o.shape for o in r.scene.objects}),
            "colour": (list(COLOURS), lambda r: {o.colour for o in r.scene.objects}),
            "size": (list(SIZES), lambda r: {o.size for o in r.scene.objects}),
            "objects": ([str(n) for n in range(1, MAX_OBJECTS + 1)], lambda r: {str(len(r.scene.objects))}),
        }
    return histograms


def _release_histograms(records: list[Record], histograms: dict, caps: dict[str, int], epsilon_each: Fraction,
                        unit: str) -> dict[str, dict[str, int]]:
    from simmim.privacy.mechanisms import bounded_counts, dp_histogram

    released = {}
    for name, (domain, bins_of) in histograms.items():
        by_unit: dict[str, set[str]] = {}
        for record in records:
            by_unit.setdefault(record.subject_id if unit == "subject" else record.record_id, set()).update(
                bins_of(record))
        counts = bounded_counts(by_unit, domain=domain, bins_per_unit=caps[name])
        released[name] = dp_histogram(counts, epsilon_each, domain=domain, bins_per_unit=caps[name]).value
    return released


def _report_dict(report: BudgetReport) -> dict:
    return {"dataset": report.dataset, "epsilon_cap": report.epsilon_cap, "delta_cap": report.delta_cap,
            "spent_epsilon": report.spent_epsilon, "reserved_epsilon": report.reserved_epsilon,
            "remaining_epsilon": report.remaining_epsilon,
            "jobs": [{"job_id": job.job_id, "status": job.status, "epsilon": job.epsilon, "delta": job.delta,
                      "description": job.description, "created_at": job.created_at.isoformat(),
                      "updated_at": job.updated_at.isoformat()} for job in report.jobs]}
