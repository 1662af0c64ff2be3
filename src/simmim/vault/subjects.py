"""Subject rows: registering new subjects with their first data key, finding a live one, removing one's rows."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from simmim.errors import VaultError
from simmim.vault.database import among, aware, in_batches, utc_now
from simmim.vault.schema import ConsentEventRow, ConsentStateRow, RecordRow, SubjectKeyRow, SubjectRow, TombstoneRow
from simmim.vault.subject_keys import SealingKeys


def add_subjects(session: Session, refs: list[str], sealing: SealingKeys) -> dict[int, str]:
    """Inserts subjects and makes each a first data key (saved by ``sealing.save()``): pk -> pseudonym."""
    if not refs:
        return {}
    now = utc_now()
    # One executemany, then one lookup: INSERT ... RETURNING of many rows runs row by row on SQLite.
    session.execute(insert(SubjectRow), [{"ref": ref, "created_at": now} for ref in refs])
    created = {}
    for part in in_batches(refs):
        created.update(session.execute(select(SubjectRow.id, SubjectRow.ref)
                                       .where(among(session, SubjectRow.ref, part))).all())
    for pk, ref in created.items():
        sealing.create(pk, ref)
    return created


def live_subject(session: Session, subject_id: str, ref: str) -> SubjectRow:
    """The subject whose pseudonym is ``ref``; a deleted or unknown one is refused, naming ``subject_id``."""
    subject = session.scalars(select(SubjectRow).where(SubjectRow.ref == ref)).first()
    tombstone = session.get(TombstoneRow, ref)
    if tombstone is not None and tombstone.lifted_at is None:
        raise VaultError(f"subject {subject_id!r} was deleted on {aware(tombstone.deleted_at):%Y-%m-%d}; "
                         f"nothing of theirs is left")
    if subject is None:
        raise VaultError(f"subject {subject_id!r} is not in the vault")
    return subject


def purge_subject(session: Session, subject_pk: int | None) -> None:
    """Deletes a subject's row and every row of theirs (records, consent, data keys)."""
    if subject_pk is None:
        return
    for table in (RecordRow, ConsentEventRow, ConsentStateRow, SubjectKeyRow):
        session.execute(delete(table).where(table.subject_pk == subject_pk))
    session.execute(delete(SubjectRow).where(SubjectRow.id == subject_pk))
