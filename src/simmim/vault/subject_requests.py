"""Requests from the people in the data: export, delete (crypto-shredding, tombstones), rectify.

Deletion destroys the subject's data keys first (one small transaction, whatever the amount of
data), writes a tombstone (their keyed hash) that refuses re-ingest until they consent again and
flags the models trained on them; their rows are removed afterwards (`purge_shredded`).
Tombstones can be exported and re-applied to a database restored from a backup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from simmim.data.records import Record
from simmim.errors import VaultError
from simmim.vault import access, audit, envelope
from simmim.vault.database import aware, transaction, utc_now
from simmim.vault.export import write_archive
from simmim.vault.lineage import lineage_of
from simmim.vault.payloads import check_id, encode_record
from simmim.vault.release import opened_records, stored_records
from simmim.vault.schema import (
    ConsentEventRow,
    ConsentStateRow,
    ModelLineageRow,
    RecordRow,
    SubjectKeyRow,
    SubjectRow,
    TombstoneRow,
)
from simmim.vault.subject_keys import SealingKeys
from simmim.vault.subjects import live_subject, purge_subject
from simmim.vault.unlocked import UnlockedVault

SUBJECT_DELETED, TOMBSTONES_APPLIED = "delete-subject", "apply-tombstones"  # audit actions; `consent_audit` reads them


@dataclass(frozen=True)
class DeletionReport:
    """What a deletion did and which trained artefacts saw the subject."""

    subject_ref: str
    records_deleted: int
    snapshots: tuple[str, ...]
    checkpoints: tuple[str, ...]
    shred_seconds: float
    total_seconds: float


class SubjectRequests(UnlockedVault):
    """`Vault.export_subject`, `delete_subject`, `tombstones`, `apply_tombstones`, `purge_shredded`, `rectify`."""

    def export_subject(self, subject_id: str, out: str | Path) -> Path:
        """Writes everything stored about a subject, decrypted, as a zip archive (see `export`)."""
        ref = self.subject_ref(check_id(subject_id, "subject_id", "export"))
        with self._operation(access.EXPORT, f"subject:{ref}", access.DSR_PURPOSE) as session:
            subject = live_subject(session, subject_id, ref)
            theirs = (stored_records(RecordRow.created_at, RecordRow.updated_at)
                      .where(RecordRow.subject_pk == subject.id).order_by(RecordRow.created_at, RecordRow.id))
            records, metas = [], []
            for row, record, _ in opened_records(session, self._kek, theirs):
                records.append(record)
                metas.append({"kind": row.kind, "revision": row.revision,
                              "created_at": aware(row.created_at).isoformat(),
                              "updated_at": aware(row.updated_at).isoformat()})
            events = session.scalars(select(ConsentEventRow).where(ConsentEventRow.subject_pk == subject.id)
                                     .order_by(ConsentEventRow.id))
            history = [{"purpose": e.purpose, "granted": e.granted, "at": aware(e.at).isoformat(),
                        "notice_version": e.notice_version, "source": e.source} for e in events]
            current = {row.purpose: row.granted for row in session.scalars(
                select(ConsentStateRow).where(ConsentStateRow.subject_pk == subject.id))}
            snapshots, checkpoints = lineage_of(session, ref)
            manifest = {"subject_id": subject_id, "pseudonym": ref, "vault": self.vault_id,
                        "exported_at": utc_now().isoformat(), "subject_since": aware(subject.created_at).isoformat(),
                        "consent_current": current, "consent_history": history, "snapshots": snapshots,
                        "model_checkpoints": checkpoints}
            path = write_archive(out, manifest, list(zip(records, metas, strict=True)))
            audit.append(session, actor=self.principal, action="export-subject", resource=f"subject:{ref}",
                         purpose=access.DSR_PURPOSE, details={"records": len(records)})
        self._maybe_checkpoint()
        return path

    def delete_subject(self, subject_id: str) -> DeletionReport:
        """Erases a subject: shreds their data keys, tombstones them, flags models, then removes their rows.

        The shred (one small transaction) is the moment the data becomes unreadable; the row
        removal follows in a second transaction (a crash in between leaves only ciphertext
        without keys, removed by the next deletion or `purge_shredded`).

        Returns:
            The report, listing the snapshots and model checkpoints that included the subject.
        """
        ref = self.subject_ref(check_id(subject_id, "subject_id", "delete"))
        started = time.perf_counter()
        with self._operation(access.DELETE, f"subject:{ref}", access.DSR_PURPOSE) as session:
            subject = live_subject(session, subject_id, ref)
            records, snapshots, checkpoints = shred_subject(session, subject.id, ref, utc_now())
            audit.append(session, actor=self.principal, action=SUBJECT_DELETED, resource=f"subject:{ref}",
                         purpose=access.DSR_PURPOSE, details={"records": records, "snapshots": snapshots,
                                                              "checkpoints": checkpoints, "step": "shred"})
        shred_seconds = time.perf_counter() - started
        self.purge_shredded()
        self._maybe_checkpoint()
        return DeletionReport(subject_ref=ref, records_deleted=records, snapshots=tuple(snapshots),
                              checkpoints=tuple(checkpoints), shred_seconds=shred_seconds,
                              total_seconds=time.perf_counter() - started)

    def tombstones(self) -> list[dict]:
        """Every deletion this vault has done, by pseudonym and date (to re-apply to a restored backup)."""
        with self._operation(access.DELETE, "tombstones", access.DSR_PURPOSE) as session:
            rows = session.scalars(select(TombstoneRow).order_by(TombstoneRow.deleted_at, TombstoneRow.ref))
            return [{"ref": r.ref, "deleted_at": aware(r.deleted_at).isoformat(),
                     "lifted_at": aware(r.lifted_at).isoformat() if r.lifted_at else None} for r in rows]

    def apply_tombstones(self, tombstones: Iterable[dict]) -> int:
        """Re-applies deletions (from the live vault's `tombstones`) to this vault, e.g. a restored backup.

        Each subject whose data here predates the deletion is shredded and removed as by
        `delete_subject`; the tombstone is written either way, so a later ingest is refused too.

        Returns:
            How many subjects present here were shredded.
        """
        entries = [tombstone_entry(item) for item in tombstones]
        with self._operation(access.DELETE, "tombstones", access.DSR_PURPOSE) as session:
            shredded, tombstoned, lifted = [], [], []
            for ref, deleted_at, lifted_at in entries:
                subject = session.scalars(select(SubjectRow).where(SubjectRow.ref == ref)).first()
                current = session.get(TombstoneRow, ref)
                if current is not None and aware(current.deleted_at) >= deleted_at:
                    continue  # this vault already knows this deletion (or a later one)
                stale = subject is not None and aware(subject.created_at) <= deleted_at
                shred_subject(session, subject.id if stale else None, ref, deleted_at, lifted_at)
                (tombstoned if lifted_at is None else lifted).append(ref)  # logged: `verify` checks the rows
                if stale:
                    shredded.append(ref)
            audit.append(session, actor=self.principal, action=TOMBSTONES_APPLIED, resource="tombstones",
                         purpose=access.DSR_PURPOSE, details={"tombstones": len(entries), "shredded": len(shredded),
                                                              "shredded_subjects": sorted(shredded),
                                                              "tombstoned_subjects": sorted(tombstoned),
                                                              "lifted_subjects": sorted(lifted)})
        self.purge_shredded()
        self._maybe_checkpoint()
        return len(shredded)

    def purge_shredded(self) -> int:
        """Removes the rows of subjects whose keys were shredded (normally right after `delete_subject`)."""
        with transaction(self._engine) as session:
            audit.lock_head(session)
            has_key = select(SubjectKeyRow.subject_pk)
            shredded = list(session.scalars(select(SubjectRow).where(SubjectRow.id.not_in(has_key))))
            for subject in shredded:
                purge_subject(session, subject.id)
        if shredded:
            self._reclaim_key_space()
        return len(shredded)

    def _reclaim_key_space(self) -> None:
        """Lets the database drop the deleted key rows' bytes now rather than at some later maintenance.

        SQLite: the WAL still holds the pages with the wrapped keys until it is checkpointed and
        truncated (the main file's freed pages are already zeroed by ``secure_delete``).
        PostgreSQL: dead rows stay in the table's pages until VACUUM; the keys table is small.
        """
        raw = self._engine.raw_connection()
        try:
            if self._engine.url.get_backend_name() == "sqlite":
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                raw.driver_connection.autocommit = True  # VACUUM cannot run inside a transaction
                try:
                    raw.driver_connection.execute("VACUUM vault_subject_keys")
                finally:
                    raw.driver_connection.autocommit = False
        finally:
            raw.close()

    def rectify(self, record: Record) -> int:
        """Replaces a stored record (same record id and subject) with corrected content.

        Returns:
            The record's new revision. The old ciphertext is gone; the audit log keeps the change.
        """
        kind, payload = encode_record(record, max_bytes=self.max_payload_bytes)
        ref, subject_ref = self.record_ref(record.record_id), self.subject_ref(record.subject_id)
        with self._operation(access.RECTIFY, f"record:{ref}", access.DSR_PURPOSE) as session:
            row = session.scalars(select(RecordRow).where(RecordRow.ref == ref)).first()
            if row is None:
                raise VaultError(f"record {record.record_id!r} is not in the vault; ingest it instead")
            subject = session.get(SubjectRow, row.subject_pk)
            if subject.ref != subject_ref:
                raise VaultError(f"record {record.record_id!r} belongs to another subject; a record cannot change "
                                 f"owner (delete it with its subject and ingest it again)")
            sealing = SealingKeys(session, self._kek, self._kek_id)
            sealing.load({subject.id: subject.ref})
            version, data_key = sealing.reserve(subject.id, envelope.chunk_count(len(payload), self.chunk_bytes))
            sealing.save()
            row.revision += 1
            row.kind, row.key_version, row.plaintext_bytes, row.chunk_bytes = kind, version, len(payload), \
                self.chunk_bytes
            row.payload = envelope.seal_payload(data_key, payload, record_ref=ref, subject_ref=subject.ref,
                                                key_version=version, revision=row.revision,
                                                chunk_bytes=self.chunk_bytes)
            row.updated_at = utc_now()
            audit.append(session, actor=self.principal, action="rectify", resource=f"record:{ref}",
                         purpose=access.DSR_PURPOSE, details={"subject": subject.ref, "revision": row.revision})
            revision = row.revision
        self._maybe_checkpoint()
        return revision


def shred_subject(session: Session, subject_pk: int | None, ref: str, deleted_at: datetime,
                  lifted_at: datetime | None = None) -> tuple[int, list[str], list[str]]:
    """Destroys a subject's data keys and consent state, writes their tombstone and flags the models
    trained on them; returns (records made unreadable, snapshots, checkpoints that included them)."""
    records = 0
    if subject_pk is not None:
        records = session.scalar(select(func.count()).select_from(RecordRow)
                                 .where(RecordRow.subject_pk == subject_pk))
        session.execute(delete(SubjectKeyRow).where(SubjectKeyRow.subject_pk == subject_pk))
        session.execute(delete(ConsentStateRow).where(ConsentStateRow.subject_pk == subject_pk))
    tombstone = session.get(TombstoneRow, ref)
    if tombstone is None:
        session.add(TombstoneRow(ref=ref, deleted_at=deleted_at, records_deleted=records, lifted_at=lifted_at))
    else:
        tombstone.deleted_at, tombstone.records_deleted, tombstone.lifted_at = deleted_at, records, lifted_at
    snapshots, checkpoints = lineage_of(session, ref)
    for row in session.scalars(select(ModelLineageRow).where(ModelLineageRow.checkpoint_id.in_(checkpoints))):
        row.deleted_subjects += 1
        row.flagged_at = row.flagged_at or deleted_at
    return records, snapshots, checkpoints


def tombstone_entry(item: dict) -> tuple[str, datetime, datetime | None]:
    try:
        ref, deleted_at = item["ref"], datetime.fromisoformat(item["deleted_at"])
        lifted_at = datetime.fromisoformat(item["lifted_at"]) if item.get("lifted_at") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise VaultError(f"malformed tombstone {item!r}: {exc}") from None
    if not isinstance(ref, str) or not re.fullmatch(r"[0-9a-f]{64}", ref):
        raise VaultError(f"malformed tombstone {item!r}: ref must be 64 hex digits")
    return ref, aware(deleted_at), aware(lifted_at)
