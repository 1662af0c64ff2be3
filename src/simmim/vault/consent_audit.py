"""Consent rows checked against the audit log: a consent changed in the database behind the vault's back is found.

The rows `release` selects on (`ConsentStateRow`) and the history an export shows
(`ConsentEventRow`) are plain rows; the audit log is the signed record of every change to them.
Replaying the log gives, for each subject pseudonym, the grants and withdrawals since the subject
last lost their consent rows (a deletion: ``delete-subject``, ``apply-tombstones``, or a deleted
subject's consent letting them back in). Then:

* every consent row must hold the log's last word for its subject and purpose (a grant no entry
  logs, a withdrawal turned back into a grant, a row whose log entry says otherwise: found);
* every last word the log holds for a subject still in the database must have its row (a
  withdrawal erased by deleting the row: found), and a subject with logged consent cannot vanish
  without a logged deletion;
* each subject's consent history must be the logged sequence, event for event (an event deleted,
  inserted or flipped: found).

What it cannot see: a database writer who also appends well-chained log entries after the newest
signed checkpoint (the audit log's own limit, see `audit`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from simmim.vault import audit
from simmim.vault.consent import CONSENT_GRANT, CONSENT_WITHDRAW
from simmim.vault.schema import AuditEntryRow, ConsentEventRow, ConsentStateRow, SubjectRow
from simmim.vault.subject_requests import SUBJECT_DELETED, TOMBSTONES_APPLIED

CONSENT_LOG_ACTIONS = (CONSENT_GRANT, CONSENT_WITHDRAW, SUBJECT_DELETED, TOMBSTONES_APPLIED)


@dataclass(frozen=True)
class _LoggedChange:
    purpose: str
    granted: bool
    seq: int

    def describe(self, *, with_purpose: bool = False) -> str:
        purpose = f" for {self.purpose}" if with_purpose else ""
        return f"{_change(self.granted)}{purpose} (entry {self.seq})"


def _change(granted: bool) -> str:
    return "a grant" if granted else "a withdrawal"


def _state(granted: bool) -> str:
    return "granted" if granted else "withdrawn"


def _subject(ref: str) -> str:
    return f"subject {ref[:16]} (pseudonym)"


def _logged_consent(session: Session) -> tuple[dict[str, list[_LoggedChange]], list[str]]:
    """Per subject pseudonym, the consent changes the log holds since the subject last lost their consent rows;
    and the problems met reading the entries."""
    history: dict[str, list[_LoggedChange]] = {}
    problems: list[str] = []
    entries = session.execute(select(AuditEntryRow.seq, AuditEntryRow.action, AuditEntryRow.resource,
                                     AuditEntryRow.purpose, AuditEntryRow.outcome, AuditEntryRow.details)
                              .where(AuditEntryRow.action.in_(CONSENT_LOG_ACTIONS)).order_by(AuditEntryRow.seq))
    for seq, action, resource, purpose, outcome, details_text in entries:
        if outcome != audit.DONE:
            continue
        try:
            details = json.loads(details_text)
        except ValueError:
            problems.append(f"entry {seq} ({action}): its details are not JSON, so the consent it logs is unknown")
            continue
        if action == SUBJECT_DELETED:
            history.pop(resource.removeprefix("subject:"), None)
        elif action == TOMBSTONES_APPLIED:
            for ref in details.get("shredded_subjects", []):
                history.pop(ref, None)
        else:
            for ref in details.get("returning_subjects", []):
                history.pop(ref, None)
            for ref in details.get("subjects", []):
                history.setdefault(ref, []).append(_LoggedChange(purpose, action == CONSENT_GRANT, seq))
    return history, problems


def consent_problems(session: Session) -> tuple[int, list[str]]:
    """Compares the consent rows with the log; returns how many rows were checked and what does not match."""
    logged, problems = _logged_consent(session)
    refs = dict(session.execute(select(SubjectRow.id, SubjectRow.ref)).all())
    states = session.execute(select(ConsentStateRow.subject_pk, ConsentStateRow.purpose, ConsentStateRow.granted)
                             .order_by(ConsentStateRow.subject_pk, ConsentStateRow.purpose)).all()
    stored: dict[tuple[str, str], bool] = {}
    for subject_pk, purpose, granted in states:
        ref = refs.get(subject_pk, f"#{subject_pk}")
        stored[(ref, purpose)] = granted
        last = _last_word(logged.get(ref, []), purpose)
        if last is None:
            problems.append(f"consent of {_subject(ref)} for {purpose} is {_state(granted)} in the database, but no "
                            f"log entry grants or withdraws it: the consent row was written outside the vault")
        elif last.granted != granted:
            problems.append(f"consent of {_subject(ref)} for {purpose} is {_state(granted)} in the database, but the "
                            f"log's last word on it is {last.describe()}: the consent row was changed outside the "
                            f"vault")
    present = set(refs.values())
    for ref, changes in sorted(logged.items()):
        for purpose in sorted({change.purpose for change in changes}):
            last = _last_word(changes, purpose)
            if ref not in present:
                problems.append(f"{_subject(ref)} is not in the database, but the log's last word on its consent for "
                                f"{purpose} is {last.describe()} and no deletion of it is logged: the subject's rows "
                                f"were deleted outside the vault")
            elif (ref, purpose) not in stored:
                problems.append(f"consent of {_subject(ref)} for {purpose} is missing from the database, but the "
                                f"log's last word on it is {last.describe()}: the consent row was deleted outside "
                                f"the vault")
    problems.extend(_history_problems(session, refs, logged))
    return len(states), problems


def _last_word(changes: list[_LoggedChange], purpose: str) -> _LoggedChange | None:
    return next((change for change in reversed(changes) if change.purpose == purpose), None)


def _history_problems(session: Session, refs: dict[int, str], logged: dict[str, list[_LoggedChange]]) -> list[str]:
    """Each subject's consent events, in order, against the logged changes since the subject's last deletion."""
    events: dict[str, list[tuple[str, bool]]] = {}
    for subject_pk, purpose, granted in session.execute(
            select(ConsentEventRow.subject_pk, ConsentEventRow.purpose, ConsentEventRow.granted)
            .order_by(ConsentEventRow.id)):
        events.setdefault(refs.get(subject_pk, f"#{subject_pk}"), []).append((purpose, granted))
    problems = []
    for ref in sorted(set(events) | (set(logged) & set(refs.values()))):
        stored, changes = events.get(ref, []), logged.get(ref, [])
        if stored == [(change.purpose, change.granted) for change in changes]:
            continue
        index = next((i for i, (event, change) in enumerate(zip(stored, changes))
                      if event != (change.purpose, change.granted)), min(len(stored), len(changes)))
        in_db = f"{_change(stored[index][1])} for {stored[index][0]}" if index < len(stored) else "absent"
        in_log = changes[index].describe(with_purpose=True) if index < len(changes) else "absent"
        problems.append(f"consent history of {_subject(ref)} does not match the log: event {index + 1} is {in_db} in "
                        f"the database and {in_log} in the log ({len(stored)} stored, {len(changes)} logged): "
                        f"an event was changed, deleted or inserted outside the vault")
    return problems
