"""Consent and purpose: release gives exactly the currently consenting, not-deleted subjects, as a snapshot."""

import dataclasses

import pytest

from simmim.errors import VaultError
from simmim.vault import Release

from .conftest import run_sql, subjects_of


def _by_subject(records) -> dict[str, set[str]]:
    owned: dict[str, set[str]] = {}
    for record in records:
        owned.setdefault(record.subject_id, set()).add(record.record_id)
    return owned


def test_release_holds_only_subjects_consenting_to_that_purpose_now(vault, records):
    vault.ingest(records)
    owned = _by_subject(records)
    subjects = subjects_of(records)
    granted, withdrawn, never, other_purpose, deleted = subjects[0:2], subjects[2], subjects[3], subjects[4], \
        subjects[5]
    vault.grant_consent([*granted, withdrawn, deleted], "model-training", notice_version="v1")
    vault.withdraw_consent(withdrawn, "model-training")
    vault.grant_consent(other_purpose, "analytics", notice_version="v1")
    vault.delete_subject(deleted)
    released = vault.release("model-training")
    assert isinstance(released, Release)
    assert {r.record_id for r in released.records} == owned[granted[0]] | owned[granted[1]]
    assert {r.subject_id for r in released.records} == set(granted)
    assert released.subject_count == 2
    assert released.excluded == {"no_consent": len(subjects) - 4, "withdrawn": 1, "deleted": 1}
    assert vault.consents(withdrawn) == {"model-training": False}
    assert vault.consents(never) == {}
    analytics = vault.release("analytics")
    assert {r.subject_id for r in analytics.records} == {other_purpose}


def test_consent_given_again_after_withdrawal_counts(vault, records):
    vault.ingest(records)
    subject = records[0].subject_id
    vault.grant_consent(subject, "evaluation", notice_version="v1")
    vault.withdraw_consent(subject, "evaluation")
    assert vault.release("evaluation").records == []
    vault.grant_consent(subject, "evaluation", notice_version="v2", source="web-form")
    assert {r.subject_id for r in vault.release("evaluation").records} == {subject}


def test_snapshot_id_is_a_fingerprint_of_the_released_content(vault, db_url, records):
    vault.ingest(records)
    vault.grant_consent(subjects_of(records)[:3], "model-training", notice_version="v1")
    first, again = vault.release("model-training"), vault.release("model-training")
    assert first.snapshot_id == again.snapshot_id and len(first.snapshot_id) == 64
    assert first.subjects_hash == again.subjects_hash
    assert [r.record_id for r in first.records] == [r.record_id for r in again.records]
    changed = first.records[0]
    vault.rectify(dataclasses.replace(changed, captions=("a corrected caption",)))
    after_rectify = vault.release("model-training")
    assert after_rectify.snapshot_id != first.snapshot_id
    assert after_rectify.subjects_hash == first.subjects_hash
    vault.grant_consent(subjects_of(records)[3], "model-training", notice_version="v1")
    wider = vault.release("model-training")
    assert wider.subjects_hash != first.subjects_hash
    stored = run_sql(db_url, "SELECT id, subject_count FROM vault_snapshots ORDER BY subject_count")
    assert {row.id for row in stored} == {first.snapshot_id, after_rectify.snapshot_id, wider.snapshot_id}
    logged = run_sql(db_url, "SELECT details FROM vault_audit_log WHERE action = 'release'")
    assert len(logged) == 4 and all(first.snapshot_id in row.details or "snapshot" in row.details for row in logged)


def test_undeclared_purpose_and_unknown_subject_are_refused(vault, records):
    vault.ingest(records[:2])
    with pytest.raises(VaultError, match="purpose 'marketing' is not declared; declared: analytics, evaluation"):
        vault.grant_consent(records[0].subject_id, "marketing", notice_version="v1")
    with pytest.raises(VaultError, match="'marketing' is not declared"):
        vault.release("marketing")
    with pytest.raises(VaultError, match="subject 'nobody-here' is not in the vault; nothing to withdraw"):
        vault.withdraw_consent("nobody-here", "model-training")
    with pytest.raises(VaultError, match="notice_version"):
        vault.grant_consent(records[0].subject_id, "model-training", notice_version="")
    vault.declare_purpose("marketing", "newsletters")
    vault.grant_consent(records[0].subject_id, "marketing", notice_version="v1")
    assert vault.release("marketing").subject_count == 1


def test_consent_before_data_registers_the_subject(vault, records):
    own = [r for r in records if r.subject_id == records[0].subject_id]
    assert vault.grant_consent(own[0].subject_id, "model-training", notice_version="v1") == 1
    assert vault.ingest(own).new_subjects == 0
    released = vault.release("model-training").records
    assert sorted(r.record_id for r in released) == sorted(r.record_id for r in own)


def test_declared_purposes_are_listed(vault):
    assert set(vault.purposes()) == {"model-training", "evaluation", "analytics"}
    vault.declare_purpose("fairness-audit", "checking error rates across groups")
    assert vault.purposes()["fairness-audit"] == "checking error rates across groups"
    with pytest.raises(VaultError, match="already declared"):
        vault.declare_purpose("fairness-audit", "again")
    with pytest.raises(VaultError, match="purpose name 'Bad Name!'"):
        vault.declare_purpose("Bad Name!", "no")


def test_ingest_writes_and_release_reads_in_pages_without_changing_the_set(vault, records, monkeypatch):
    """Ciphertexts are written a slice at a time and read a page at a time; the stored and released set is the same."""
    from simmim.vault import ingest, release

    monkeypatch.setattr(ingest, "INSERT_BYTES", 1)  # every record its own insert
    vault.ingest(records)
    subjects = subjects_of(records)
    vault.grant_consent(subjects, "model-training", notice_version="v1")
    whole = vault.release("model-training")
    monkeypatch.setattr(release, "PAGE_ROWS", 5)
    paged = vault.release("model-training")
    assert len(paged.records) == len(records) and paged.snapshot_id == whole.snapshot_id
    assert [r.record_id for r in paged.records] == [r.record_id for r in whole.records]
