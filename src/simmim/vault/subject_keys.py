"""Subjects' data keys inside one transaction: loaded in one query, counted per nonce, saved in one go.

Each subject has one or more key versions (``vault_subject_keys``); new payloads are sealed
under the newest. Every AES-GCM message (chunk) sealed is counted against its key; a key that
would pass `envelope.MAX_MESSAGES_PER_KEY` is retired and a new version made, so random 96-bit
nonces stay within NIST's bound. Destroying every version of a subject is crypto-shredding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from simmim.errors import VaultError
from simmim.vault import envelope, keys
from simmim.vault.database import among, in_batches
from simmim.vault.schema import SubjectKeyRow, SubjectRow


def unwrap_data_key(kek: bytes | keys.KeyWrapper, wrapped: bytes, subject_ref: str, version: int, kek_id: str) -> bytes:
    """The plain data key, or a `VaultError` naming the subject's pseudonym if it does not unwrap."""
    wrapper = kek if isinstance(kek, keys.KeyWrapper) else keys.KeyWrapper(kek)
    key = wrapper.unwrap(wrapped, keys.data_key_context(subject_ref, version, kek_id))
    if key is None:
        raise VaultError(f"data key {version} of subject {subject_ref[:16]} does not unwrap: it was changed or moved")
    return key


@dataclass(slots=True)
class _Slot:
    subject_pk: int
    subject_ref: str
    version: int
    data_key: bytes
    encryptions: int
    row_id: int | None  # None until the new key is saved
    changed: bool = False
    _cipher: AESGCM | None = None

    @property
    def cipher(self) -> AESGCM:
        if self._cipher is None:
            self._cipher = AESGCM(self.data_key)
        return self._cipher


_KEY_COLUMNS = (SubjectKeyRow.id, SubjectKeyRow.version, SubjectKeyRow.wrapped, SubjectKeyRow.kek_id,
                SubjectKeyRow.encryptions)


class KeyCache:
    """Subjects' newest keys (with their counts) as this vault object last committed them, kept
    between its ingests so that a subject who comes back is not looked up and unwrapped again.

    Valid only while nobody else has written: every write to the vault appends to the audit log
    under the chain head's lock, so the cache holds the head's sequence number at its commit and
    is used only by a transaction that finds the head unchanged (`valid_at`). Any other operation
    of this vault clears it (a deleted subject's key must not linger in memory).
    """

    MAX_SUBJECTS = 100_000

    def __init__(self) -> None:
        self.seq: int | None = None
        self.pk_of: dict[str, int] = {}
        self.slots: dict[int, _Slot] = {}

    def valid_at(self, seq: int) -> bool:
        return self.seq is not None and self.seq == seq

    def clear(self) -> None:
        self.seq = None
        self.pk_of.clear()
        self.slots.clear()

    def keep(self, seq_before: int, seq_after: int, sealing: SealingKeys) -> None:
        """After ``sealing``'s transaction committed (it found the head at ``seq_before`` and left it at
        ``seq_after``): its saved keys, as saved. What the cache held stays only if it was valid for
        that transaction, which held the head's lock throughout."""
        if not self.valid_at(seq_before) or len(self.slots) > self.MAX_SUBJECTS:
            self.clear()
        for slot in sealing.saved_slots():
            self.pk_of[slot.subject_ref] = slot.subject_pk
            self.slots[slot.subject_pk] = replace(slot)
        for pk in sealing.unsaved_subjects():  # a new key version: read from the database next time
            self.slots.pop(pk, None)
        self.seq = seq_after


class SealingKeys:
    """The newest data key of each subject a transaction seals for."""

    def __init__(self, session: Session, kek: bytes, kek_id: str, cache: KeyCache | None = None) -> None:
        self._session, self._kek_id = session, kek_id
        self._wrapper = keys.KeyWrapper(kek)
        self._slots: dict[int, _Slot] = {}
        self._retired: list[_Slot] = []
        self._cache = cache

    def load(self, subjects: dict[int, str]) -> None:
        """Loads the newest key of each subject (primary key -> pseudonym) not loaded yet."""
        wanted = [pk for pk in subjects if pk not in self._slots]
        for part in in_batches(wanted):
            rows = self._session.connection().execute(
                select(SubjectKeyRow.subject_pk, *_KEY_COLUMNS).where(among(self._session, SubjectKeyRow.subject_pk,
                                                                            part))).all()
            self._take_newest(rows, {pk: subjects[pk] for pk in part})

    def find(self, refs: list[str]) -> dict[str, int]:
        """The subjects among these pseudonyms that exist (pseudonym -> primary key), their newest keys
        loaded: one query per slice of ``refs`` for the subjects and their keys together."""
        found: dict[str, int] = {}
        if self._cache is not None:  # a copy: this transaction may still roll back
            for ref in refs:
                pk = self._cache.pk_of.get(ref)
                if pk is not None and pk in self._cache.slots:
                    found[ref] = pk
                    self._slots.setdefault(pk, replace(self._cache.slots[pk]))
            refs = [ref for ref in refs if ref not in found]
        for part in in_batches(refs):
            rows = self._session.connection().execute(
                select(SubjectRow.ref, SubjectRow.id, *_KEY_COLUMNS)
                .join(SubjectKeyRow, SubjectKeyRow.subject_pk == SubjectRow.id, isouter=True)
                .where(among(self._session, SubjectRow.ref, part))).all()
            subjects = {}
            for ref, pk, *_ in rows:
                found[ref] = pk
                if pk not in self._slots:
                    subjects[pk] = ref
            self._take_newest((key for _, *key in rows if key[1] is not None), subjects)
        return found

    def _take_newest(self, rows, subjects: dict[int, str]) -> None:
        """Makes a slot for each of ``subjects`` (pk -> pseudonym) from the newest of its key ``rows``:
        tuples (subject pk, key row id, version, wrapped key, KEK id, encryptions)."""
        newest: dict[int, tuple] = {}
        for row in rows:
            current = newest.get(row[0])
            if current is None or row[2] > current[2]:
                newest[row[0]] = row
        for pk, ref in subjects.items():
            row = newest.get(pk)
            if row is None:
                raise VaultError(f"subject {ref[:16]} has no data key (it was shredded)")
            _, row_id, version, wrapped, kek_id, encryptions = row
            self._slots[pk] = _Slot(pk, ref, version, unwrap_data_key(self._wrapper, wrapped, ref, version, kek_id),
                                    encryptions, row_id)

    def create(self, subject_pk: int, subject_ref: str, version: int = 1) -> None:
        """A new random key for a subject (its first, or the next version)."""
        self._slots[subject_pk] = _Slot(subject_pk, subject_ref, version, keys.new_key(), 0, None, True)

    def reserve(self, subject_pk: int, messages: int) -> tuple[int, AESGCM]:
        """(key version, its cipher) to seal ``messages`` AES-GCM messages, counted against that key."""
        slot = self._slots[subject_pk]
        if slot.encryptions + messages > envelope.MAX_MESSAGES_PER_KEY:
            self._retired.append(slot)
            self.create(subject_pk, slot.subject_ref, slot.version + 1)
            slot = self._slots[subject_pk]
        slot.encryptions += messages
        slot.changed = True
        return slot.version, slot.cipher

    def save(self) -> None:
        """Writes new keys (wrapped) and the updated counts, in the caller's transaction."""
        slots = [*self._retired, *self._slots.values()]
        now = datetime.now(UTC)
        new = [{"subject_pk": s.subject_pk, "version": s.version, "kek_id": self._kek_id, "encryptions": s.encryptions,
                "created_at": now,
                "wrapped": self._wrapper.wrap(s.data_key, keys.data_key_context(s.subject_ref, s.version,
                                                                                 self._kek_id))}
               for s in slots if s.row_id is None]
        counted = {s.row_id: s.encryptions for s in slots if s.row_id is not None and s.changed}
        if new:
            self._session.connection().execute(insert(SubjectKeyRow.__table__), new)
        if counted:
            self._save_counts(counted)
        self._retired.clear()
        for slot in self._slots.values():
            slot.changed = False

    def saved_slots(self) -> list[_Slot]:
        """After `save`: the keys with their row ids (keys made in this transaction have none yet)."""
        return [slot for slot in self._slots.values() if slot.row_id is not None]

    def unsaved_subjects(self) -> list[int]:
        return [slot.subject_pk for slot in self._slots.values() if slot.row_id is None]

    def _save_counts(self, counted: dict[int, int]) -> None:
        connection = self._session.connection()
        if connection.dialect.name == "postgresql":  # one statement, two array parameters
            connection.execute(text(
                "UPDATE vault_subject_keys AS k SET encryptions = c.count FROM unnest(CAST(:ids AS bigint[]), "
                "CAST(:counts AS bigint[])) AS c(id, count) WHERE k.id = c.id"),
                {"ids": list(counted), "counts": list(counted.values())})
            return
        # SQLite: one executemany of a prepared statement (a CASE over many ids was quadratic there)
        table = SubjectKeyRow.__table__
        statement = update(table).where(table.c.id == bindparam("key_id")).values(encryptions=bindparam("count"))
        connection.execute(statement, [{"key_id": key_id, "count": count} for key_id, count in counted.items()])


def opening_keys(session: Session, kek: bytes, subjects: dict[int, str]) -> dict[tuple[int, int], AESGCM]:
    """Every key version of the given subjects (primary key -> pseudonym), unwrapped: (pk, version) -> cipher."""
    wrapper = keys.KeyWrapper(kek)
    found: dict[tuple[int, int], AESGCM] = {}
    pks = list(subjects)
    for part in in_batches(pks):
        rows = session.connection().execute(
            select(SubjectKeyRow.subject_pk, SubjectKeyRow.version, SubjectKeyRow.wrapped, SubjectKeyRow.kek_id)
            .where(among(session, SubjectKeyRow.subject_pk, part))).all()
        for row in rows:
            found[(row.subject_pk, row.version)] = AESGCM(unwrap_data_key(
                wrapper, row.wrapped, subjects[row.subject_pk], row.version, row.kek_id))
    return found
