"""Release: the records usable for a purpose now, decrypted in memory, recorded as a snapshot."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Row, Select, func, insert, select
from sqlalchemy.orm import Session

from simmim.data.records import Record
from simmim.errors import VaultError
from simmim.vault import access, audit, envelope
from simmim.vault.database import utc_now
from simmim.vault.payloads import decode_record
from simmim.vault.schema import (
    ConsentStateRow,
    PurposeRow,
    RecordRow,
    SnapshotRow,
    SnapshotSubjectRow,
    SubjectRow,
    TombstoneRow,
)
from simmim.vault.subject_keys import opening_keys
from simmim.vault.unlocked import UnlockedVault


@dataclass(frozen=True)
class Release:
    """A released set: records decrypted in memory, and the snapshot that names them.

    Attributes:
        snapshot_id: SHA-256 fingerprint of (purpose, every record's pseudonym, revision and
            content hash); equal sets give equal ids. Checkpoints record it.
        subjects_hash: SHA-256 of the sorted subject pseudonyms in the set.
        excluded: Subjects left out, by reason: ``no_consent`` (never granted for the purpose),
            ``withdrawn``; ``deleted`` counts the vault's tombstones.
    """

    snapshot_id: str
    purpose: str
    records: list[Record]
    subjects_hash: str
    subject_count: int
    excluded: dict[str, int]


PAGE_ROWS = 64  # stored records fetched at a time when opening them


class Releasing(UnlockedVault):
    """`Vault.release`."""

    def release(self, purpose: str) -> Release:
        """The records usable for ``purpose`` now, decrypted in memory, recorded as a snapshot.

        Only subjects whose current consent for the purpose is a grant, and who are not deleted, are
        included. Records come sorted by pseudonym, so equal sets come in equal order.

        Raises:
            AccessDeniedError: If the principal may not release for this purpose.
            VaultError: If the purpose is not declared, or a ciphertext fails authentication (the
                message names the record's pseudonym).
        """
        with self._operation(access.RELEASE, "records", purpose) as session:
            if session.get(PurposeRow, purpose) is None:
                raise VaultError(f"purpose {purpose!r} is not declared")
            consenting = (stored_records().join(ConsentStateRow, ConsentStateRow.subject_pk == RecordRow.subject_pk)
                          .where(ConsentStateRow.purpose == purpose, ConsentStateRow.granted.is_(True))
                          .order_by(RecordRow.ref))
            records, fingerprint, subject_refs = [], [], set()
            for row, record, content_hash in opened_records(session, self._kek, consenting):
                records.append(record)
                fingerprint.append([row.ref, row.revision, content_hash])
                subject_refs.add(row.subject_ref)
            excluded = self._excluded(session, purpose)
            snapshot_id = hashlib.sha256(json.dumps([purpose, fingerprint]).encode()).hexdigest()
            subjects_hash = hashlib.sha256("\n".join(sorted(subject_refs)).encode()).hexdigest()
            if session.get(SnapshotRow, snapshot_id) is None:
                session.add(SnapshotRow(id=snapshot_id, purpose=purpose, created_at=utc_now(),
                                        record_count=len(records), subject_count=len(subject_refs),
                                        subjects_hash=subjects_hash))
                session.flush()
                if subject_refs:
                    included = [{"snapshot_id": snapshot_id, "subject_ref": ref} for ref in sorted(subject_refs)]
                    session.connection().execute(insert(SnapshotSubjectRow.__table__), included)
            audit.append(session, actor=self.principal, action="release", resource="records", purpose=purpose,
                         details={"snapshot": snapshot_id, "records": len(records), "subjects": len(subject_refs),
                                  "subjects_hash": subjects_hash, "excluded": excluded})
        self._maybe_checkpoint()
        return Release(snapshot_id=snapshot_id, purpose=purpose, records=records, subjects_hash=subjects_hash,
                       subject_count=len(subject_refs), excluded=excluded)

    def _excluded(self, session: Session, purpose: str) -> dict[str, int]:
        answered = select(ConsentStateRow.subject_pk).where(ConsentStateRow.purpose == purpose)
        withdrawn = session.scalar(select(func.count()).select_from(ConsentStateRow).where(
            ConsentStateRow.purpose == purpose, ConsentStateRow.granted.is_(False)))
        never = session.scalar(select(func.count()).select_from(SubjectRow).where(SubjectRow.id.not_in(answered)))
        deleted = session.scalar(select(func.count()).select_from(TombstoneRow).where(TombstoneRow.lifted_at.is_(None)))
        return {"no_consent": never, "withdrawn": withdrawn, "deleted": deleted}


def stored_records(*extra) -> Select:
    """The columns of stored records that opening them needs (and ``extra`` ones), with the subject's pseudonym."""
    return select(RecordRow.ref, RecordRow.subject_pk, RecordRow.kind, RecordRow.key_version, RecordRow.revision,
                  RecordRow.chunk_bytes, RecordRow.plaintext_bytes, RecordRow.payload, *extra,
                  SubjectRow.ref.label("subject_ref")).join(SubjectRow, SubjectRow.id == RecordRow.subject_pk)

def opened_records(session: Session, kek: bytes, query: Select) -> Iterator[tuple[Row, Record, str]]:
    """Each row of ``query`` (a `stored_records` select) with its record decrypted and the SHA-256 of its plaintext.

    Rows are fetched `PAGE_ROWS` at a time, so beside the records the caller keeps only one page of
    ciphertexts is in memory, not every ciphertext of the set. A ciphertext that fails
    authentication raises, naming the record's pseudonym.
    """
    owners = query.order_by(None).subquery()
    subjects = dict(session.connection().execute(select(owners.c.subject_pk, owners.c.subject_ref).distinct()).all())
    data_keys = opening_keys(session, kek, subjects)
    for row in session.connection().execute(query.execution_options(yield_per=PAGE_ROWS)):
        data_key = data_keys.get((row.subject_pk, row.key_version))
        if data_key is None:
            raise VaultError(f"record {row.ref[:16]}: its data key is gone (the subject was shredded)")
        plaintext = envelope.open_payload(data_key, row.payload, record_ref=row.ref, subject_ref=row.subject_ref,
                                          key_version=row.key_version, revision=row.revision,
                                          chunk_bytes=row.chunk_bytes, plaintext_bytes=row.plaintext_bytes,
                                          what=f"record {row.ref[:16]} (pseudonym) of subject "
                                               f"{row.subject_ref[:16]}")
        yield row, decode_record(plaintext, f"record {row.ref[:16]}"), hashlib.sha256(plaintext).hexdigest()
