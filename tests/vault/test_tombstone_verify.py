"""`verify` checks tombstones against the audit log: a deletion undone behind the vault's back is found."""

from simmim.vault import Vault

from .conftest import run_sql, subjects_of
from .test_subject_requests import _copy_database


def _deleting_vault(vault, records):
    """Two deletions, and one of the deleted subjects back by consenting again (their tombstone lifted)."""
    vault.ingest(records)
    subjects = subjects_of(records)
    vault.grant_consent(subjects, "model-training", notice_version="v1")
    vault.delete_subject(subjects[0])
    vault.delete_subject(subjects[1])
    vault.grant_consent(subjects[1], "model-training", notice_version="v2")  # back after the deletion
    return subjects


def _entry_of(db_url, action: str) -> int:
    return run_sql(db_url, "SELECT max(seq) FROM vault_audit_log WHERE action = :action", action=action)[0][0]


def _deletion_entry(vault, db_url, subject_id) -> int:
    return run_sql(db_url, "SELECT seq FROM vault_audit_log WHERE action = 'delete-subject' AND resource = :r",
                   r=f"subject:{vault.subject_ref(subject_id)}")[0][0]


def test_untouched_tombstones_verify(vault, records):
    _deleting_vault(vault, records)
    report = vault.verify()
    assert report.ok, report.problems
    assert report.tombstones_checked == 2


def test_a_removed_tombstone_is_found(vault, db_url, records):
    deleted = _deleting_vault(vault, records)[0]
    ref = vault.subject_ref(deleted)
    run_sql(db_url, "DELETE FROM vault_tombstones WHERE ref = :ref", ref=ref)
    vault.ingest([r for r in records if r.subject_id == deleted])  # what the removal buys: the person is back in
    problems = vault.verify().problems
    assert problems == [f"the log deletes subject {ref[:16]} (pseudonym) (tombstone active since entry "
                        f"{_deletion_entry(vault, db_url, deleted)}), but its tombstone is missing from the database: "
                        f"it was removed outside the vault, so the deleted subject could be ingested again"]


def test_a_tombstone_lifted_in_the_database_is_found(vault, db_url, records):
    deleted = _deleting_vault(vault, records)[0]
    ref = vault.subject_ref(deleted)
    run_sql(db_url, "UPDATE vault_tombstones SET lifted_at = deleted_at WHERE ref = :ref", ref=ref)
    problems = vault.verify().problems
    assert problems == [f"tombstone of subject {ref[:16]} (pseudonym) is lifted in the database, but the log left it "
                        f"active (entry {_deletion_entry(vault, db_url, deleted)}): it was changed outside the vault: "
                        f"the deleted subject could be ingested again"]


def test_a_lifted_tombstone_made_active_again_is_found(vault, db_url, records):
    returned = _deleting_vault(vault, records)[1]
    ref = vault.subject_ref(returned)
    run_sql(db_url, "UPDATE vault_tombstones SET lifted_at = NULL WHERE ref = :ref", ref=ref)
    problems = vault.verify().problems
    assert problems == [f"tombstone of subject {ref[:16]} (pseudonym) is active in the database, but the log left it "
                        f"lifted (entry {_entry_of(db_url, 'consent-grant')}): it was changed outside the vault"]


def test_a_tombstone_written_into_the_database_is_found(vault, db_url, records):
    subjects = _deleting_vault(vault, records)
    ref = vault.subject_ref(subjects[2])
    run_sql(db_url, "INSERT INTO vault_tombstones (ref, deleted_at, records_deleted) VALUES "
                    "(:ref, CURRENT_TIMESTAMP, 0)", ref=ref)
    problems = vault.verify().problems
    assert problems == [f"tombstone of subject {ref[:16]} (pseudonym) is in the database, but no log entry deletes "
                        f"that subject: the tombstone was written outside the vault"]


def test_tombstones_applied_to_a_restored_backup_verify_active_and_lifted(db_url, key_source, records, tmp_path,
                                                                         audit_key_path):
    with Vault.create(db_url, key_source) as live:
        live.ingest(records)
        subjects = subjects_of(records)
        backup_url = _copy_database(db_url, tmp_path)
        live.delete_subject(subjects[0])
        live.delete_subject(subjects[1])
        live.grant_consent(subjects[1], "model-training", notice_version="v2")
        tombstones = live.tombstones()
    with Vault.open(backup_url, key_source, principal="admin") as restored:
        assert restored.apply_tombstones(tombstones) == 2
        report = restored.verify(audit_key_path)
        assert report.ok and report.tombstones_checked == 2, report.problems
        entry = restored.audit_entries(limit=20)
    applied = next(e for e in entry if e["action"] == "apply-tombstones")["details"]
    assert applied["tombstoned_subjects"] == [restored.subject_ref(subjects[0])]
    assert applied["lifted_subjects"] == [restored.subject_ref(subjects[1])]
