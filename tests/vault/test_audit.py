"""The audit log: append-only, hash-chained, signed checkpoints; `verify` names what was tampered with."""

import json

import pytest
from sqlalchemy.exc import DBAPIError

from simmim.vault import AuditKey, generate_signing_key
from simmim.vault.audit import entry_hash

from .conftest import run_sql, subjects_of


def _busy_vault(vault, records):
    """A vault with a few dozen entries and checkpoints along the way."""
    vault.checkpoint_every = 5
    vault.ingest(records[:20])
    vault.ingest(records[20:])
    subjects = subjects_of(records)
    for subject in subjects:
        vault.grant_consent(subject, "model-training", notice_version="v1")
    vault.release("model-training")
    vault.delete_subject(subjects[0])
    vault.checkpoint()
    return vault


def _allow_tampering(db_url):
    if db_url.startswith("sqlite"):
        run_sql(db_url, "DROP TRIGGER vault_audit_log_no_update")
        run_sql(db_url, "DROP TRIGGER vault_audit_log_no_delete")
    else:
        run_sql(db_url, "DROP TRIGGER vault_audit_log_append_only ON vault_audit_log")


def _last_seq(db_url) -> int:
    return run_sql(db_url, "SELECT max(seq) FROM vault_audit_log")[0][0]


def test_an_untouched_log_verifies_and_holds_pseudonyms_only(vault, db_url, records):
    _busy_vault(vault, records)
    report = vault.verify()
    assert report.ok, report.problems
    assert report.entries == _last_seq(db_url) > 20
    assert report.checkpoints >= 3 and report.last_checkpoint == report.entries - 1  # verify's own decision follows
    log = str(run_sql(db_url, "SELECT * FROM vault_audit_log"))
    for record in records:
        assert record.subject_id not in log and record.record_id not in log and record.caption not in log
    assert vault.subject_ref(records[0].subject_id) in log


def test_the_database_refuses_updates_and_deletes_of_entries(vault, db_url):
    with pytest.raises(DBAPIError, match="append-only"):
        run_sql(db_url, "UPDATE vault_audit_log SET actor = 'someone-else' WHERE seq = 1")
    with pytest.raises(DBAPIError, match="append-only"):
        run_sql(db_url, "DELETE FROM vault_audit_log WHERE seq = 1")


def test_verify_names_a_modified_entry(vault, db_url, records):
    _busy_vault(vault, records)
    _allow_tampering(db_url)
    run_sql(db_url, "UPDATE vault_audit_log SET outcome = 'allowed' WHERE seq = 7")
    problems = vault.verify().problems
    assert "entry 7 was modified: its content does not match its hash" in problems
    assert any("do not match the signed checkpoint" in p for p in problems)


def test_verify_names_a_deleted_entry(vault, db_url, records):
    _busy_vault(vault, records)
    _allow_tampering(db_url)
    run_sql(db_url, "DELETE FROM vault_audit_log WHERE seq = 9")
    assert "entry 9 missing: deleted from the log (the next entry is 10)" in vault.verify().problems


def test_verify_names_an_inserted_entry(vault, db_url, records):
    _busy_vault(vault, records)
    _allow_tampering(db_url)
    run_sql(db_url, "UPDATE vault_audit_log SET seq = seq + 1000000 WHERE seq >= 12")
    run_sql(db_url, "UPDATE vault_audit_log SET seq = seq - 1000000 + 1 WHERE seq >= 1000000")
    prev = run_sql(db_url, "SELECT entry_hash FROM vault_audit_log WHERE seq = 11")[0][0]
    forged = ["12", "2026-01-01T00:00:00+00:00", "admin", "release", "records", "model-training", "done", "{}"]
    digest = entry_hash(prev, 12, *forged[1:])
    run_sql(db_url, "INSERT INTO vault_audit_log VALUES (12, :at, :actor, :action, :res, :purpose, :outcome, "
                    ":details, :prev, :hash)", at=forged[1], actor=forged[2], action=forged[3], res=forged[4],
            purpose=forged[5], outcome=forged[6], details=forged[7], prev=prev, hash=digest)
    run_sql(db_url, "UPDATE vault_audit_head SET seq = seq + 1")
    problems = vault.verify().problems
    assert "entry 13 does not follow entry 12: an entry was inserted, reordered or replaced here" in problems
    assert "entry 12 was modified: its content does not match its hash" not in problems  # the forgery is well formed


def test_verify_names_reordered_entries(vault, db_url, records):
    _busy_vault(vault, records)
    _allow_tampering(db_url)
    run_sql(db_url, "UPDATE vault_audit_log SET seq = -1 WHERE seq = 15")
    run_sql(db_url, "UPDATE vault_audit_log SET seq = 15 WHERE seq = 16")
    run_sql(db_url, "UPDATE vault_audit_log SET seq = 16 WHERE seq = -1")
    problems = vault.verify().problems
    assert "entry 15 does not follow entry 14: an entry was inserted, reordered or replaced here" in problems
    assert "entry 16 does not follow entry 15: an entry was inserted, reordered or replaced here" in problems


def test_verify_finds_truncation_after_a_checkpoint(vault, db_url, records):
    _busy_vault(vault, records)
    signed = run_sql(db_url, "SELECT max(seq) FROM vault_audit_checkpoints")[0][0]
    _allow_tampering(db_url)
    run_sql(db_url, "DELETE FROM vault_audit_log WHERE seq > :keep", keep=signed - 4)
    run_sql(db_url, "UPDATE vault_audit_head SET seq = :keep, entry_hash = (SELECT entry_hash FROM vault_audit_log "
                    "WHERE seq = :keep)", keep=signed - 4)
    problems = vault.verify().problems
    truncated = [p for p in problems if p.startswith("log truncated")]
    assert truncated[-1].startswith(f"log truncated: checkpoint at entry {signed} is signed but the log ends at")


def test_a_recomputed_chain_is_caught_by_the_signed_checkpoints(vault, db_url, records, audit_key_path):
    _busy_vault(vault, records)
    _allow_tampering(db_url)
    run_sql(db_url, "UPDATE vault_audit_log SET details = '{}' WHERE seq = 5")
    rows = run_sql(db_url, "SELECT * FROM vault_audit_log ORDER BY seq")
    prev = "0" * 64
    for row in rows:  # the attacker rehashes the whole chain and the head
        digest = entry_hash(prev, row.seq, row.at, row.actor, row.action, row.resource, row.purpose, row.outcome,
                            row.details)
        run_sql(db_url, "UPDATE vault_audit_log SET prev_hash = :p, entry_hash = :h WHERE seq = :s", p=prev, h=digest,
                s=row.seq)
        prev = digest
    run_sql(db_url, "UPDATE vault_audit_head SET entry_hash = :h", h=prev)
    problems = vault.verify().problems
    assert not any("was modified" in p or "does not follow" in p for p in problems)  # the chain itself is consistent
    first_checkpoint = run_sql(db_url, "SELECT min(seq) FROM vault_audit_checkpoints WHERE seq >= 5")[0][0]
    assert (f"entries up to {first_checkpoint} do not match the signed checkpoint at entry {first_checkpoint}: "
            f"the log was rewritten at or before entry {first_checkpoint}") in problems
    # Deleting the checkpoints from the database does not help: the anchor file beside the key keeps them.
    run_sql(db_url, "DELETE FROM vault_audit_checkpoints")
    problems = vault.verify().problems
    assert any(str(AuditKey.load(audit_key_path).anchor_path) in p or "rewritten" in p for p in problems)
    assert "the database holds no checkpoints but the anchor file does: they were deleted" in problems


def test_checkpoints_signed_with_another_key_are_rejected(vault, db_url, records, tmp_path):
    _busy_vault(vault, records)
    impostor = AuditKey.load(generate_signing_key(tmp_path / "impostor.key"))
    problems = vault.verify(impostor).problems
    assert problems and all("signature is not valid for audit key" in p for p in problems)
    public = tmp_path / "audit.pub"
    public.write_bytes(vault.audit_key.public_pem())
    assert vault.verify(public).ok  # the auditor needs only the public key


def test_checkpoint_anchor_file_holds_signed_heads(vault, db_url, records):
    _busy_vault(vault, records)
    lines = [json.loads(line) for line in vault.audit_key.anchor_path.read_text().splitlines()]
    stored = run_sql(db_url, "SELECT seq, entry_hash, signature FROM vault_audit_checkpoints ORDER BY seq")
    assert [(x["seq"], x["entry_hash"], x["signature"]) for x in lines] == [tuple(s) for s in stored]


def test_audit_entries_show_the_newest_decisions_and_operations(vault, records):
    vault.ingest(records[:3])
    newest = vault.audit_entries(limit=3)
    assert [e["action"] for e in newest] == ["authorize:ingest", "ingest", "authorize:verify"]
    assert newest[1]["details"]["records"] == 3
    assert newest[1]["details"]["subjects"] == sorted({vault.subject_ref(r.subject_id) for r in records[:3]})
    assert [e["seq"] for e in newest] == sorted(e["seq"] for e in newest)
