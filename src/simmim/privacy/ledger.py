"""The privacy budget ledger: per dataset, a cap (epsilon, delta) and every job that spends from it.

A job reserves its planned mechanisms before it runs, then commits what it actually spent or
releases the reservation if it was abandoned. A reservation is refused, before anything runs, if
composing it with every committed and still-reserved job of the dataset (one PLD, through
`accounting.composed_epsilon`, at the cap's delta) would exceed the cap. A job killed between
reserve and commit leaves its reservation counted: budget is never lost, only held.

Durability: state lives in a database (SQLite by default; any SQLAlchemy URL). Every change is
one transaction. On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (the write lock is
taken before the budget is read, so two processes reserving at once are serialised) and the
journal is in WAL mode with full sync; on other databases the dataset's row is locked
``FOR UPDATE``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, ForeignKey, String, Text, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from simmim.errors import BudgetExceededError, PrivacyError
from simmim.privacy.accounting import (
    PrivacyEvent,
    composed_epsilon,
    event_from_dict,
    event_to_dict,
)
from simmim.storage import make_engine, transaction

LEDGER_URL_ENV = "SIMMIM_LEDGER_URL"
DEFAULT_LEDGER_URL = "sqlite:///runs/privacy-ledger.db"
RESERVED, COMMITTED, RELEASED = "reserved", "committed", "released"
# A commit may differ from its reservation by PLD rounding without being an overspend.
_EPSILON_TOLERANCE = 1e-9


def ledger_url(url: str | None = None) -> str:
    """`url` if given, else the ``SIMMIM_LEDGER_URL`` environment variable, else the default file."""
    return url or os.environ.get(LEDGER_URL_ENV) or DEFAULT_LEDGER_URL


class _Base(DeclarativeBase):
    pass


class _DatasetRow(_Base):
    __tablename__ = "privacy_datasets"

    dataset: Mapped[str] = mapped_column(String(200), primary_key=True)
    epsilon_cap: Mapped[float] = mapped_column(Float)
    delta_cap: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class _JobRow(_Base):
    __tablename__ = "privacy_jobs"

    job_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("privacy_datasets.dataset"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    delta: Mapped[float] = mapped_column(Float)
    reserved_events: Mapped[str] = mapped_column(Text)  # JSON list of accounting events
    spent_events: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def counted_events(self) -> list[PrivacyEvent]:
        """What the job counts against the budget: its spend once committed, else its reservation."""
        if self.status == RELEASED:
            return []
        return _events_from_json(self.spent_events if self.status == COMMITTED else self.reserved_events)


@dataclass(frozen=True)
class JobEntry:
    """One job as the ledger holds it.

    Attributes:
        epsilon: The job's own epsilon at its delta (spent if committed, else reserved).
    """

    job_id: str
    dataset: str
    status: str
    description: str
    delta: float
    epsilon: float
    reserved_events: tuple[PrivacyEvent, ...]
    spent_events: tuple[PrivacyEvent, ...] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Reservation:
    """A granted reservation.

    Attributes:
        epsilon: The job's own epsilon at its delta.
        total_epsilon: The dataset's composed epsilon (committed + reserved), at the cap's delta,
            with this job included.
        remaining_epsilon: Cap minus `total_epsilon`.
    """

    job_id: str
    dataset: str
    events: tuple[PrivacyEvent, ...]
    delta: float
    epsilon: float
    total_epsilon: float
    remaining_epsilon: float


@dataclass(frozen=True)
class BudgetReport:
    """A dataset's budget; every epsilon is at the cap's delta.

    Attributes:
        spent_epsilon: Committed jobs, composed.
        reserved_epsilon: What the open reservations add on top of the spent epsilon.
        remaining_epsilon: Cap minus spent and reserved (negative if the cap was lowered since).
    """

    dataset: str
    epsilon_cap: float
    delta_cap: float
    spent_epsilon: float
    reserved_epsilon: float
    remaining_epsilon: float
    jobs: tuple[JobEntry, ...]


class Ledger:
    """The budget ledger on one database.

    Args:
        url: SQLAlchemy URL; default from `ledger_url`. For SQLite files the folder is created.

    Attributes:
        url: The database URL without its password, for messages.
    """

    def __init__(self, url: str | None = None) -> None:
        try:
            parsed = make_url(ledger_url(url))
        except SQLAlchemyError as exc:
            raise PrivacyError(f"bad privacy ledger URL: {exc}") from None
        self.url = parsed.render_as_string(hide_password=True)  # for messages: never the password
        try:
            self._engine = make_engine(parsed)
            _Base.metadata.create_all(self._engine)
        except (SQLAlchemyError, ImportError, OSError) as exc:
            reason = getattr(exc, "orig", None) or exc
            raise PrivacyError(f"cannot open the privacy ledger at {self.url}: {reason}") from None

    def close(self) -> None:
        """Closes the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def set_cap(self, dataset: str, *, epsilon: float, delta: float) -> None:
        """Sets or changes a dataset's cap. Lowering it below what is spent refuses every later job."""
        if not epsilon > 0:
            raise PrivacyError(f"the cap's epsilon must be positive, got {epsilon}")
        if not 0 < delta < 1:
            raise PrivacyError(f"the cap's delta must be in (0, 1), got {delta}")
        with _transaction(self._engine) as session:
            row = session.get(_DatasetRow, dataset, with_for_update=True)
            if row is None:
                row = _DatasetRow(dataset=dataset)
                session.add(row)
            row.epsilon_cap, row.delta_cap, row.updated_at = epsilon, delta, _now()

    def reserve(self, dataset: str, job_id: str, events: Sequence[PrivacyEvent], delta: float,
                description: str = "") -> Reservation:
        """Reserves budget for a job before it runs.

        Args:
            dataset: The dataset's id (a vault snapshot id or a data fingerprint).
            job_id: A new, unique job id.
            events: The mechanisms the job plans to run.
            delta: The delta the job reports its epsilon at; at most the cap's delta.
            description: Free text shown by `show`.

        Returns:
            The reservation.

        Raises:
            BudgetExceededError: If the dataset's jobs, this one included, would exceed the cap.
            PrivacyError: If the dataset has no cap, the job id is taken, or delta is too large.
        """
        events = tuple(events)
        if not events:
            raise PrivacyError(f"job {job_id!r} reserves no privacy events; a job releasing nothing needs none")
        with _transaction(self._engine) as session:
            cap = self._cap(session, dataset)
            if not 0 <= delta <= cap.delta_cap:
                raise PrivacyError(f"job delta must be in [0, {cap.delta_cap:g}] (the cap's delta), got {delta}")
            if session.get(_JobRow, job_id) is not None:
                raise PrivacyError(f"job id {job_id!r} is already in the ledger; use a new one")
            before = _counted_events(session, dataset)
            total = composed_epsilon([*before, *events], cap.delta_cap)
            if total > cap.epsilon_cap:
                spent = composed_epsilon(before, cap.delta_cap)
                raise BudgetExceededError(
                    f"job {job_id!r} refused: dataset {dataset} would reach epsilon {total:.4g} over its cap "
                    f"{cap.epsilon_cap:g} (delta {cap.delta_cap:g}); spent or reserved so far {spent:.4g}, "
                    f"remaining {cap.epsilon_cap - spent:.4g}")
            now = _now()
            session.add(_JobRow(job_id=job_id, dataset=dataset, status=RESERVED, description=description, delta=delta,
                                reserved_events=_events_to_json(events), spent_events=None, created_at=now,
                                updated_at=now))
        return Reservation(job_id=job_id, dataset=dataset, events=events, delta=delta,
                           epsilon=composed_epsilon(events, delta), total_epsilon=total,
                           remaining_epsilon=cap.epsilon_cap - total)

    def commit(self, job_id: str, actual_events: Sequence[PrivacyEvent]) -> JobEntry:
        """Records what a reserved job actually spent, which replaces its reservation.

        The spend is recorded even if it exceeds the reservation, since the ledger must never
        count less than what ran; the overspend is then reported by raising.

        Raises:
            PrivacyError: If the job is unknown or not reserved, or (after recording) if it spent
                more than it reserved.
        """
        actual_events = tuple(actual_events)
        with _transaction(self._engine) as session:
            row = self._open_job(session, job_id, "commit")
            cap = self._cap(session, row.dataset)
            reserved = composed_epsilon(_events_from_json(row.reserved_events), cap.delta_cap)
            spent = composed_epsilon(actual_events, cap.delta_cap)
            row.status, row.spent_events, row.updated_at = COMMITTED, _events_to_json(actual_events), _now()
            entry = _entry(row)
        if spent > reserved + _EPSILON_TOLERANCE:
            raise PrivacyError(f"job {job_id!r} spent epsilon {spent:.4g}, more than its reservation {reserved:.4g} "
                               f"(at delta {cap.delta_cap:g}); the spend is recorded")
        return entry

    def release(self, job_id: str) -> JobEntry:
        """Frees the reservation of a job that was abandoned before spending anything.

        Raises:
            PrivacyError: If the job is unknown or not reserved.
        """
        with _transaction(self._engine) as session:
            row = self._open_job(session, job_id, "release")
            row.status, row.updated_at = RELEASED, _now()
            return _entry(row)

    def show(self, dataset: str) -> BudgetReport:
        """The dataset's cap, spent, reserved and remaining epsilon, and its jobs (oldest first).

        Raises:
            PrivacyError: If the dataset has no cap.
        """
        with _transaction(self._engine) as session:
            cap = self._cap(session, dataset)
            rows = session.scalars(select(_JobRow).where(_JobRow.dataset == dataset)
                                   .order_by(_JobRow.created_at, _JobRow.job_id)).all()
            jobs = tuple(_entry(row) for row in rows)
        spent_events = [e for job in jobs if job.status == COMMITTED for e in job.spent_events]
        reserved_events = [e for job in jobs if job.status == RESERVED for e in job.reserved_events]
        spent = composed_epsilon(spent_events, cap.delta_cap)
        total = composed_epsilon(spent_events + reserved_events, cap.delta_cap)
        return BudgetReport(dataset=dataset, epsilon_cap=cap.epsilon_cap, delta_cap=cap.delta_cap,
                            spent_epsilon=spent, reserved_epsilon=total - spent,
                            remaining_epsilon=cap.epsilon_cap - total, jobs=jobs)

    def datasets(self) -> list[str]:
        """Ids of every dataset with a cap, sorted."""
        with _transaction(self._engine) as session:
            return list(session.scalars(select(_DatasetRow.dataset).order_by(_DatasetRow.dataset)))

    def job(self, job_id: str) -> JobEntry:
        """One job.

        Raises:
            PrivacyError: If the job is unknown.
        """
        with _transaction(self._engine) as session:
            row = session.get(_JobRow, job_id)
            if row is None:
                raise PrivacyError(f"no job {job_id!r} in the privacy ledger at {self.url}")
            return _entry(row)

    def _cap(self, session: Session, dataset: str) -> _DatasetRow:
        # The row lock serialises reservations of one dataset on databases with row locks.
        cap = session.get(_DatasetRow, dataset, with_for_update=True)
        if cap is None:
            raise PrivacyError(f"dataset {dataset} has no privacy budget: set one with "
                               f"`simmim budget set-cap --dataset {dataset} --epsilon E --delta D`")
        return cap

    def _open_job(self, session: Session, job_id: str, action: str) -> _JobRow:
        row = session.get(_JobRow, job_id, with_for_update=True)
        if row is None:
            raise PrivacyError(f"cannot {action} job {job_id!r}: it is not in the privacy ledger at {self.url}")
        if row.status != RESERVED:
            raise PrivacyError(f"cannot {action} job {job_id!r}: it is already {row.status}")
        return row


def _transaction(engine: Engine):
    return transaction(engine, PrivacyError, "privacy ledger")


def _counted_events(session: Session, dataset: str) -> list[PrivacyEvent]:
    rows = session.scalars(select(_JobRow).where(_JobRow.dataset == dataset, _JobRow.status != RELEASED)).all()
    return [e for row in rows for e in row.counted_events()]


def _entry(row: _JobRow) -> JobEntry:
    reserved = tuple(_events_from_json(row.reserved_events))
    spent = tuple(_events_from_json(row.spent_events)) if row.spent_events is not None else None
    return JobEntry(job_id=row.job_id, dataset=row.dataset, status=row.status, description=row.description,
                    delta=row.delta, epsilon=composed_epsilon(spent if spent is not None else reserved, row.delta),
                    reserved_events=reserved, spent_events=spent, created_at=row.created_at,
                    updated_at=row.updated_at)


def _events_to_json(events: Sequence[PrivacyEvent]) -> str:
    return json.dumps([event_to_dict(e) for e in events])


def _events_from_json(text: str) -> list[PrivacyEvent]:
    return [event_from_dict(item) for item in json.loads(text)]


def _now() -> datetime:
    return datetime.now(UTC)
