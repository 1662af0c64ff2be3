"""Tombstones checked against the audit log: a deletion undone in the database behind the vault's back is found.

A tombstone is what keeps a deleted subject out: ingest refuses a subject whose pseudonym has
an active (unlifted) tombstone. Removing or lifting one by hand would let a deleted person's
data back in without their consent, so `Vault.verify` replays the log's word on each pseudonym:

* ``delete-subject`` makes the subject's tombstone active;
* ``apply-tombstones`` writes the tombstones its entry lists (active or already lifted);
* a consent grant that lets a deleted subject back in (``returning_subjects``) lifts it.

Then every tombstone row must hold the log's last word for its pseudonym, and every pseudonym the
log tombstoned must still have its row.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from simmim.vault import audit
from simmim.vault.consent import CONSENT_GRANT
from simmim.vault.schema import AuditEntryRow, TombstoneRow
from simmim.vault.subject_requests import SUBJECT_DELETED, TOMBSTONES_APPLIED

_ACTIVE, _LIFTED = "active", "lifted"


def _logged_tombstones(session: Session) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """Per pseudonym, the tombstone state the log leaves it in and the entry that did; and reading problems."""
    state: dict[str, tuple[str, int]] = {}
    problems: list[str] = []
    entries = session.execute(select(AuditEntryRow.seq, AuditEntryRow.action, AuditEntryRow.resource,
                                     AuditEntryRow.outcome, AuditEntryRow.details)
                              .where(AuditEntryRow.action.in_((SUBJECT_DELETED, TOMBSTONES_APPLIED, CONSENT_GRANT)))
                              .order_by(AuditEntryRow.seq))
    for seq, action, resource, outcome, details_text in entries:
        if outcome != audit.DONE:
            continue
        if action == SUBJECT_DELETED:
            state[resource.removeprefix("subject:")] = (_ACTIVE, seq)
            continue
        try:
            details = json.loads(details_text)
        except ValueError:
            problems.append(f"entry {seq} ({action}): its details are not JSON, so the tombstones it changed are "
                            f"unknown")
            continue
        if action == TOMBSTONES_APPLIED:
            for ref in details.get("tombstoned_subjects", []):
                state[ref] = (_ACTIVE, seq)
            for ref in details.get("lifted_subjects", []):
                state[ref] = (_LIFTED, seq)
        else:
            for ref in details.get("returning_subjects", []):
                state[ref] = (_LIFTED, seq)
    return state, problems


def tombstone_problems(session: Session) -> tuple[int, list[str]]:
    """Compares the tombstone rows with the log; returns how many rows were checked and what does not match."""
    logged, problems = _logged_tombstones(session)
    rows = session.execute(select(TombstoneRow.ref, TombstoneRow.lifted_at).order_by(TombstoneRow.ref)).all()
    stored = {ref: _ACTIVE if lifted_at is None else _LIFTED for ref, lifted_at in rows}
    for ref, actual in stored.items():
        expected = logged.get(ref)
        if expected is None:
            problems.append(f"tombstone of subject {ref[:16]} (pseudonym) is in the database, but no log entry "
                            f"deletes that subject: the tombstone was written outside the vault")
        elif expected[0] != actual:
            consequence = ": the deleted subject could be ingested again" if actual == _LIFTED else ""
            problems.append(f"tombstone of subject {ref[:16]} (pseudonym) is {actual} in the database, but the log "
                            f"left it {expected[0]} (entry {expected[1]}): it was changed outside the vault"
                            f"{consequence}")
    for ref, (expected, seq) in sorted(logged.items()):
        if ref not in stored:
            problems.append(f"the log deletes subject {ref[:16]} (pseudonym) (tombstone {expected} since entry "
                            f"{seq}), but its tombstone is missing from the database: it was removed outside the "
                            f"vault{', so the deleted subject could be ingested again' if expected == _ACTIVE else ''}")
    return len(rows), problems
