"""Model lineage: which checkpoint was trained on which snapshot, so a deletion names and flags it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from simmim.errors import VaultError
from simmim.vault import access, audit
from simmim.vault.database import aware, utc_now
from simmim.vault.payloads import check_id
from simmim.vault.schema import ModelLineageRow, SnapshotRow, SnapshotSubjectRow
from simmim.vault.unlocked import UnlockedVault


class ModelLineage(UnlockedVault):
    """`Vault.record_model` and `Vault.models`."""

    def record_model(self, checkpoint_id: str, snapshot_id: str, description: str = "") -> None:
        """Records that a model checkpoint was trained on a snapshot (lineage, for deletions)."""
        check_id(checkpoint_id, "checkpoint_id", "model lineage")
        with self._operation(access.LINEAGE, f"snapshot:{snapshot_id}", "model-training") as session:
            if session.get(SnapshotRow, snapshot_id) is None:
                raise VaultError(f"snapshot {snapshot_id!r} is not in the vault; record the id `release` returned")
            if session.get(ModelLineageRow, checkpoint_id) is not None:
                raise VaultError(f"checkpoint {checkpoint_id!r} already has a lineage entry")
            session.add(ModelLineageRow(checkpoint_id=checkpoint_id, snapshot_id=snapshot_id, recorded_at=utc_now(),
                                        description=description, deleted_subjects=0))
            audit.append(session, actor=self.principal, action="record-model", resource=f"checkpoint:{checkpoint_id}",
                         purpose="model-training", details={"snapshot": snapshot_id})

    def models(self) -> list[dict]:
        """Every recorded checkpoint with its snapshot and how many of its subjects were deleted since."""
        with self._operation(access.STATS, "models") as session:
            rows = session.scalars(select(ModelLineageRow).order_by(ModelLineageRow.recorded_at))
            return [{"checkpoint": r.checkpoint_id, "snapshot": r.snapshot_id, "deleted_subjects": r.deleted_subjects,
                     "flagged_at": aware(r.flagged_at), "description": r.description} for r in rows]


def lineage_of(session: Session, ref: str) -> tuple[list[str], list[str]]:
    """The snapshots that included the subject ``ref`` and the checkpoints trained on them."""
    snapshots = list(session.scalars(select(SnapshotSubjectRow.snapshot_id)
                                     .where(SnapshotSubjectRow.subject_ref == ref)
                                     .order_by(SnapshotSubjectRow.snapshot_id)))
    checkpoints = list(session.scalars(select(ModelLineageRow.checkpoint_id)
                                       .where(ModelLineageRow.snapshot_id.in_(snapshots))
                                       .order_by(ModelLineageRow.checkpoint_id))) if snapshots else []
    return snapshots, checkpoints
