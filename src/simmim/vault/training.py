"""Training reads people's records only through the vault: a release for the run's purpose
(consenting, not deleted subjects, decrypted in memory, logged), and afterwards the model's
lineage, so that deleting a subject later names the checkpoints that saw them."""

from __future__ import annotations

from dataclasses import dataclass

from simmim.config import VaultSection
from simmim.data.records import Record
from simmim.vault.keys import KeySource
from simmim.vault.vault import Vault


@dataclass(frozen=True)
class ReleasedData:
    records: list[Record]
    lineage: dict  # what checkpoints record: snapshot id, subjects hash, counts, exclusions


def _open(section: VaultSection) -> Vault:
    key = KeySource.key_file(section.key_file) if section.key_file else KeySource.from_environment()
    return Vault.open(section.url or None, key, principal=section.principal, audit_key=section.audit_key or None)


def release_for_training(section: VaultSection) -> ReleasedData:
    """The records released for `section.purpose`, and their snapshot.

    Raises:
        VaultError: no key, a wrong key, a principal not allowed to release for the purpose, ...
    """
    with _open(section) as vault:
        released = vault.release(section.purpose)
    lineage = {"snapshot_id": released.snapshot_id, "purpose": released.purpose,
               "subjects_hash": released.subjects_hash, "subjects": released.subject_count,
               "records": len(released.records), "excluded": dict(released.excluded)}
    return ReleasedData(records=released.records, lineage=lineage)


def record_lineage(section: VaultSection, checkpoint_id: str, snapshot_id: str, description: str) -> None:
    """Records in the vault that `checkpoint_id` was trained on `snapshot_id`."""
    with _open(section) as vault:
        vault.record_model(checkpoint_id, snapshot_id, description)
