"""Requests from the people in the data: export, deletion by crypto-shredding, rectification."""

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from simmim.errors import VaultError
from simmim.vault import Vault

from .conftest import run_sql, subjects_of


def _own(records, subject_id):
    return [r for r in records if r.subject_id == subject_id]


def test_export_holds_everything_about_the_subject_and_nothing_else(vault, records, tmp_path):
    vault.ingest(records)
    subject = next(r.subject_id for r in records if r.frames is not None)  # a subject with a clip too
    vault.grant_consent(subject, "model-training", notice_version="v3", source="app")
    vault.withdraw_consent(subject, "model-training", source="email")
    vault.grant_consent(subject, "analytics", notice_version="v3")
    snapshot = vault.release("analytics").snapshot_id
    path = vault.export_subject(subject, tmp_path / "export.zip")
    with zipfile.ZipFile(path) as archive:
        document = json.loads(archive.read("subject.json"))
        assert document["subject_id"] == subject
        assert document["consent_current"] == {"model-training": False, "analytics": True}
        assert [(e["purpose"], e["granted"], e["source"]) for e in document["consent_history"]] == [
            ("model-training", True, "app"), ("model-training", False, "email"), ("analytics", True, "api")]
        assert document["snapshots"] == [snapshot]
        own = {r.record_id: r for r in _own(records, subject)}
        assert {e["record_id"] for e in document["records"]} == set(own)
        for entry in document["records"]:
            original = own[entry["record_id"]]
            assert entry["captions"] == list(original.captions)
            pixels = [np.asarray(Image.open(io.BytesIO(archive.read(name)))) for name in entry["files"]]
            expected = [original.image] if original.image is not None else list(original.frames)
            assert len(pixels) == len(expected)
            for got, want in zip(pixels, expected, strict=True):
                np.testing.assert_array_equal(got, want)
        others = set(subjects_of(records)) - {subject}
        assert not any(other in archive.read("subject.json").decode() for other in others)
    with pytest.raises(VaultError, match="exists; an export is never written over"):
        vault.export_subject(subject, path)
    with pytest.raises(VaultError, match="subject 'someone-else' is not in the vault"):
        vault.export_subject("someone-else", tmp_path / "other.zip")


def test_delete_shreds_keys_removes_rows_and_lists_models_trained_on_the_subject(vault, db_url, records):
    vault.ingest(records)
    subjects = subjects_of(records)
    target = subjects[0]
    vault.grant_consent(subjects, "model-training", notice_version="v1")
    with_target = vault.release("model-training").snapshot_id
    vault.record_model("ckpt-with", with_target, "trained before the deletion")
    vault.withdraw_consent(target, "model-training")
    without_target = vault.release("model-training").snapshot_id
    vault.record_model("ckpt-without", without_target)
    report = vault.delete_subject(target)
    assert report.records_deleted == len(_own(records, target))
    assert report.snapshots == (with_target,)
    assert report.checkpoints == ("ckpt-with",)
    assert report.subject_ref == vault.subject_ref(target)
    models = {m["checkpoint"]: m for m in vault.models()}
    assert models["ckpt-with"]["deleted_subjects"] == 1 and models["ckpt-with"]["flagged_at"] is not None
    assert models["ckpt-without"]["flagged_at"] is None
    left = run_sql(db_url, "SELECT count(*) FROM vault_subjects WHERE ref = :r", r=report.subject_ref)[0][0]
    assert left == 0
    assert run_sql(db_url, "SELECT count(*) FROM vault_records")[0][0] == len(records) - report.records_deleted
    tombstones = run_sql(db_url, "SELECT ref FROM vault_tombstones")
    assert [t.ref for t in tombstones] == [report.subject_ref] and target not in report.subject_ref
    assert target not in str(run_sql(db_url, "SELECT * FROM vault_audit_log"))
    with pytest.raises(VaultError, match=f"subject '{target}' was deleted"):
        vault.export_subject(target, "never-written.zip")
    with pytest.raises(VaultError, match="was deleted"):
        vault.delete_subject(target)


def test_a_deleted_subject_is_refused_on_ingest_until_they_consent_again(vault, records):
    vault.ingest(records)
    target = records[0].subject_id
    own = _own(records, target)
    vault.delete_subject(target)
    with pytest.raises(VaultError, match=f"record '{own[0].record_id}': its subject was deleted and has not "
                                         f"consented again"):
        vault.ingest(own)
    with pytest.raises(VaultError, match="was deleted; nothing to withdraw"):
        vault.withdraw_consent(target, "model-training")
    assert vault.release("model-training").records == []
    assert vault.grant_consent(target, "model-training", notice_version="v2") == 1
    vault.ingest(own)
    assert {r.record_id for r in vault.release("model-training").records} == {r.record_id for r in own}
    assert vault.stats()["deleted_subjects"] == 0


def test_shredded_key_bytes_are_gone_from_the_sqlite_file(key_source, records, tmp_path):
    """SQLite only: secure_delete zeroes the freed pages and the WAL is truncated after a shred."""
    db_url = f"sqlite:///{tmp_path / 'vault.db'}"
    with Vault.create(db_url, key_source) as vault:
        vault.ingest(records)
        target = records[0].subject_id
        ref = vault.subject_ref(target)
        wrapped = run_sql(db_url, "SELECT k.wrapped FROM vault_subject_keys k JOIN vault_subjects s "
                                  "ON s.id = k.subject_pk WHERE s.ref = :r", r=ref)[0][0]
        payloads = [row[0] for row in run_sql(db_url, "SELECT r.payload FROM vault_records r JOIN vault_subjects s "
                                                      "ON s.id = r.subject_pk WHERE s.ref = :r", r=ref)]
        vault.delete_subject(target)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("vault.db*"))
    assert wrapped not in on_disk
    assert not any(payload[:64] in on_disk for payload in payloads)


def test_rectify_replaces_content_keeps_history_and_refuses_owner_changes(vault, db_url, records):
    vault.ingest(records)
    original = records[0]
    fixed = dataclasses.replace(original, captions=("the corrected caption",),
                                image=np.full_like(original.image, 7))
    assert vault.rectify(fixed) == 2
    assert vault.rectify(fixed) == 3
    vault.grant_consent(original.subject_id, "evaluation", notice_version="v1")
    back = next(r for r in vault.release("evaluation").records if r.record_id == original.record_id)
    assert back.captions == ("the corrected caption",)
    np.testing.assert_array_equal(back.image, fixed.image)
    entries = run_sql(db_url, "SELECT details FROM vault_audit_log WHERE action = 'rectify' ORDER BY seq")
    assert [json.loads(e.details)["revision"] for e in entries] == [2, 3]
    other_subject = next(r.subject_id for r in records if r.subject_id != original.subject_id)
    with pytest.raises(VaultError, match="belongs to another subject"):
        vault.rectify(dataclasses.replace(original, subject_id=other_subject))
    with pytest.raises(VaultError, match="record 'no-such-record' is not in the vault"):
        vault.rectify(dataclasses.replace(original, record_id="no-such-record"))


def test_deletions_are_carried_to_a_restored_backup(db_url, key_source, records, tmp_path, audit_key_path):
    """A backup taken before a deletion still opens with the KEK; re-applying the tombstones shreds it there."""
    with Vault.create(db_url, key_source) as live:
        live.ingest(records)
        subjects = subjects_of(records)
        live.grant_consent(subjects, "model-training", notice_version="v1")
        backup_url = _copy_database(db_url, tmp_path)
        deleted, kept = subjects[0], subjects[1]
        live.delete_subject(deleted)
        tombstones = live.tombstones()
    assert [t["ref"] for t in tombstones] == [live.subject_ref(deleted)]
    with Vault.open(backup_url, key_source, principal="admin") as restored:
        assert deleted in {r.subject_id for r in restored.release("model-training").records}  # the backup's risk
        assert restored.apply_tombstones(tombstones) == 1
        assert restored.apply_tombstones(tombstones) == 0  # idempotent
        released = {r.subject_id for r in restored.release("model-training").records}
        assert deleted not in released and kept in released
        with pytest.raises(VaultError, match="its subject was deleted"):
            restored.ingest([r for r in records if r.subject_id == deleted])
        report = restored.verify(audit_key_path)  # the shred of the deleted subject's consent is logged
        assert report.ok and report.consents_checked == len(subjects) - 1, report.problems
        assert report.tombstones_checked == 1  # the applied tombstone is logged too
    with Vault.open(backup_url, key_source, principal="admin") as restored, \
            pytest.raises(VaultError, match="malformed tombstone"):
        restored.apply_tombstones([{"ref": "not-a-ref", "deleted_at": "2026-01-01T00:00:00+00:00"}])


def _copy_database(db_url: str, tmp_path) -> str:
    """A backup: a copy of the database file, or a PostgreSQL database cloned from it."""
    if db_url.startswith("sqlite"):
        import sqlite3

        source = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        target = sqlite3.connect(tmp_path / "backup.db")
        source.backup(target)
        source.close()
        target.close()
        return f"sqlite:///{tmp_path / 'backup.db'}"
    import uuid

    import psycopg

    server, name = db_url.rsplit("/", 1)
    copy = f"backup_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f"CREATE DATABASE {copy} TEMPLATE {name}")
    return f"{server}/{copy}"
