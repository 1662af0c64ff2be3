"""Subjects' data keys inside one transaction: loaded in one query, counted per nonce, saved in one go.

Each subject has one or more key versions (``vault_subject_keys``); new payloads are sealed
under the newest. Every AES-GCM message (chunk) sealed is counted against its key; a key that
would pass `envelope.MAX_MESSAGES_PER_KEY` is retired and a new version made, so random 96-bit
nonces stay within NIST's bound. Destroying every version of a subject is crypto-shredding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from simmim.errors import VaultError
from simmim.vault import envelope, keys
from simmim.vault.database import among, in_batches
from simmim.vault.schema import SubjectKeyRow


def unwrap_data_key(kek: bytes, wrapped: bytes, subject_ref: str, version: int, kek_id: str) -> bytes:
    """The plain data key, or a `VaultError` naming the subject's pseudonym if it does not unwrap."""
    key = keys.unwrap(kek, wrapped, keys.data_key_context(subject_ref, version, kek_id))
    if key is None:
        raise VaultError(f"data key {version} of subject {subject_ref[:16]} does not unwrap: it was changed or moved")
    return key


def wrap_data_key(kek: bytes, data_key: bytes, subject_ref: str, version: int, kek_id: str) -> bytes:
    return keys.wrap(kek, data_key, keys.data_key_context(subject_ref, version, kek_id))


@dataclass
class _Slot:
    subject_pk: int
    subject_ref: str
    version: int
    data_key: bytes
    encryptions: int
    row_id: int | None  # None until the new key is saved
    changed: bool = False


class SealingKeys:
    """The newest data key of each subject a transaction seals for."""

    def __init__(self, session: Session, kek: bytes, kek_id: str) -> None:
        self._session, self._kek, self._kek_id = session, kek, kek_id
        self._slots: dict[int, _Slot] = {}
        self._retired: list[_Slot] = []

    def load(self, subjects: dict[int, str]) -> None:
        """Loads the newest key of each subject (primary key -> pseudonym) not loaded yet."""
        wanted = [pk for pk in subjects if pk not in self._slots]
        for part in in_batches(wanted):
            rows = self._session.execute(select(SubjectKeyRow.id, SubjectKeyRow.subject_pk, SubjectKeyRow.version,
                                                SubjectKeyRow.wrapped, SubjectKeyRow.kek_id,
                                                SubjectKeyRow.encryptions)
                                         .where(among(self._session, SubjectKeyRow.subject_pk, part))).all()
            newest = {}
            for row in rows:
                if row.subject_pk not in newest or row.version > newest[row.subject_pk].version:
                    newest[row.subject_pk] = row
            for pk in part:
                row = newest.get(pk)
                if row is None:
                    raise VaultError(f"subject {subjects[pk][:16]} has no data key (it was shredded)")
                self._slots[pk] = _Slot(pk, subjects[pk], row.version,
                                        unwrap_data_key(self._kek, row.wrapped, subjects[pk], row.version, row.kek_id),
                                        row.encryptions, row.id)

    def create(self, subject_pk: int, subject_ref: str, version: int = 1) -> None:
        """A new random key for a subject (its first, or the next version)."""
        self._slots[subject_pk] = _Slot(subject_pk, subject_ref, version, keys.new_key(), 0, None, True)

    def reserve(self, subject_pk: int, messages: int) -> tuple[int, bytes]:
        """(key version, data key) to seal ``messages`` AES-GCM messages, counted against that key."""
        slot = self._slots[subject_pk]
        if slot.encryptions + messages > envelope.MAX_MESSAGES_PER_KEY:
            self._retired.append(slot)
            self.create(subject_pk, slot.subject_ref, slot.version + 1)
            slot = self._slots[subject_pk]
        slot.encryptions += messages
        slot.changed = True
        return slot.version, slot.data_key

    def save(self) -> None:
        """Writes new keys (wrapped) and the updated counts, in the caller's transaction."""
        slots = [*self._retired, *self._slots.values()]
        now = datetime.now(UTC)
        new = [{"subject_pk": s.subject_pk, "version": s.version, "kek_id": self._kek_id, "encryptions": s.encryptions,
                "created_at": now,
                "wrapped": wrap_data_key(self._kek, s.data_key, s.subject_ref, s.version, self._kek_id)}
               for s in slots if s.row_id is None]
        counted = {s.row_id: s.encryptions for s in slots if s.row_id is not None and s.changed}
        if new:
            self._session.connection().execute(insert(SubjectKeyRow.__table__), new)
        if counted:  # one executemany (pipelined by psycopg); a CASE over many ids is quadratic on SQLite
            table = SubjectKeyRow.__table__
            self._session.connection().execute(
                update(table).where(table.c.id == bindparam("key_id")).values(encryptions=bindparam("count")),
                [{"key_id": key_id, "count": count} for key_id, count in counted.items()])
        self._retired.clear()
        for slot in self._slots.values():
            slot.changed = False


def opening_keys(session: Session, kek: bytes, subjects: dict[int, str]) -> dict[tuple[int, int], bytes]:
    """Every key version of the given subjects (primary key -> pseudonym), unwrapped: (pk, version) -> key."""
    found: dict[tuple[int, int], bytes] = {}
    pks = list(subjects)
    for part in in_batches(pks):
        rows = session.execute(select(SubjectKeyRow.subject_pk, SubjectKeyRow.version, SubjectKeyRow.wrapped,
                                      SubjectKeyRow.kek_id)
                               .where(among(session, SubjectKeyRow.subject_pk, part))).all()
        for row in rows:
            found[(row.subject_pk, row.version)] = unwrap_data_key(kek, row.wrapped, subjects[row.subject_pk],
                                                                   row.version, row.kek_id)
    return found
