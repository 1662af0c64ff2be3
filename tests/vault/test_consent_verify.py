"""`verify` checks consent rows against the audit log: consent changed behind the vault's back is found."""

import pytest

from simmim.errors import VaultError

from .conftest import run_sql, subjects_of


def _consenting_vault(vault, records):
    """Grants, a withdrawal, a deletion and a deleted subject's return: every way consent rows change."""
    vault.ingest(records)
    subjects = subjects_of(records)
    vault.grant_consent(subjects[:5], "model-training", notice_version="v1")
    vault.grant_consent(subjects[1], "analytics", notice_version="v1")
    vault.withdraw_consent(subjects[2], "model-training")
    vault.delete_subject(subjects[3])
    vault.delete_subject(subjects[4])
    vault.grant_consent(subjects[4], "evaluation", notice_version="v2")  # back after the deletion
    return subjects


def _subject_pk(vault, db_url, subject_id) -> int:
    return run_sql(db_url, "SELECT id FROM vault_subjects WHERE ref = :ref", ref=vault.subject_ref(subject_id))[0][0]


def _entry_of(db_url, action: str) -> int:
    return run_sql(db_url, "SELECT max(seq) FROM vault_audit_log WHERE action = :action", action=action)[0][0]


def test_untouched_consent_rows_verify(vault, records):
    _consenting_vault(vault, records)
    report = vault.verify()
    assert report.ok, report.problems
    assert report.consents_checked == 5  # subjects 0, 1 (two purposes), 2 and the returned 4


def test_a_grant_written_into_the_database_is_found(vault, db_url, records):
    subjects = _consenting_vault(vault, records)
    never_asked = subjects[6]
    pk = _subject_pk(vault, db_url, never_asked)
    run_sql(db_url, "INSERT INTO vault_consents (subject_pk, purpose, granted, updated_at) VALUES "
                    "(:pk, 'model-training', :yes, CURRENT_TIMESTAMP)", pk=pk, yes=True)
    assert never_asked in {r.subject_id for r in vault.release("model-training").records}  # what the forgery buys
    problems = vault.verify().problems
    ref = vault.subject_ref(never_asked)[:16]
    assert problems == [f"consent of subject {ref} (pseudonym) for model-training is granted in the database, but no "
                        f"log entry grants or withdraws it: the consent row was written outside the vault"]


def test_a_withdrawal_turned_back_into_a_grant_is_found(vault, db_url, records):
    subjects = _consenting_vault(vault, records)
    withdrawn = subjects[2]
    withdrawal = _entry_of(db_url, "consent-withdraw")
    run_sql(db_url, "UPDATE vault_consents SET granted = :yes WHERE subject_pk = :pk", yes=True,
            pk=_subject_pk(vault, db_url, withdrawn))
    problems = vault.verify().problems
    ref = vault.subject_ref(withdrawn)[:16]
    assert problems == [f"consent of subject {ref} (pseudonym) for model-training is granted in the database, but the "
                        f"log's last word on it is a withdrawal (entry {withdrawal}): the consent row was changed "
                        f"outside the vault"]


def test_a_withdrawal_erased_from_row_and_history_is_found(vault, db_url, records):
    """The thorough forger flips the row and deletes the withdrawal event: both are named."""
    subjects = _consenting_vault(vault, records)
    pk = _subject_pk(vault, db_url, subjects[2])
    run_sql(db_url, "UPDATE vault_consents SET granted = :yes WHERE subject_pk = :pk", yes=True, pk=pk)
    run_sql(db_url, "DELETE FROM vault_consent_events WHERE subject_pk = :pk AND granted = :no", pk=pk, no=False)
    problems = vault.verify().problems
    ref = vault.subject_ref(subjects[2])[:16]
    assert len(problems) == 2
    assert problems[0].startswith(f"consent of subject {ref} (pseudonym) for model-training is granted in the database")
    assert problems[1] == (f"consent history of subject {ref} (pseudonym) does not match the log: event 2 is absent "
                           f"in the database and a withdrawal for model-training (entry "
                           f"{_entry_of(db_url, 'consent-withdraw')}) in the log (1 stored, 2 logged): an "
                           f"event was changed, deleted or inserted outside the vault")


def test_a_deleted_consent_row_is_found(vault, db_url, records):
    subjects = _consenting_vault(vault, records)
    run_sql(db_url, "DELETE FROM vault_consents WHERE subject_pk = :pk", pk=_subject_pk(vault, db_url, subjects[2]))
    problems = vault.verify().problems
    assert len(problems) == 1
    assert "for model-training is missing from the database, but the log's last word on it is a withdrawal" in \
        problems[0]


def test_record_event_cannot_log_a_consent_change(vault):
    for action in ("consent-grant", "consent-withdraw", "delete-subject", "apply-tombstones"):
        with pytest.raises(VaultError, match="logged only by the vault's own operation"):
            vault.record_event(action, "subjects", details={"subjects": ["0" * 64]})
