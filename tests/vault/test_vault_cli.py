"""`simmim vault ...`: the whole workflow in-process, and the real entry point's one-line errors."""

import json
import subprocess
import sys
import zipfile

import pytest
from typer.testing import CliRunner

from simmim.cli import app
from simmim.data.formats import write_dataset

from .conftest import run_sql

runner = CliRunner()


def _cli(db_url, tmp_path, *args, who="admin"):
    env = {"SIMMIM_VAULT_URL": db_url, "SIMMIM_VAULT_AUDIT_KEY": str(tmp_path / "audit.key"),
           "SIMMIM_VAULT_PRINCIPAL": who}
    return runner.invoke(app, ["vault", *map(str, args), "--key-file", str(tmp_path / "vault.key")], env=env)


def test_vault_workflow_through_the_cli(db_url, tmp_path, records):
    data = write_dataset(records[:30], tmp_path / "data", "webdataset", records_per_shard=10)
    init = _cli(db_url, tmp_path, "init", "--new-key")
    assert init.exit_code == 0, init.output
    assert "created" in init.output and (tmp_path / "audit.key").is_file() and (tmp_path / "vault.key").is_file()
    ingest = _cli(db_url, tmp_path, "ingest", data)
    assert ingest.exit_code == 0, ingest.output
    subjects = sorted({r.subject_id for r in records[:30]})
    assert f"ingested 30 record(s); {len(subjects)} new subject(s)" in ingest.output
    grant = _cli(db_url, tmp_path, "consent", "grant", *subjects, "--purpose", "model-training",
                 "--notice-version", "2026-11")
    assert grant.exit_code == 0, grant.output
    assert _cli(db_url, tmp_path, "consent", "withdraw", subjects[0], "--purpose", "model-training").exit_code == 0
    export = _cli(db_url, tmp_path, "export-subject", subjects[1], "--out", tmp_path / "export.zip")
    assert export.exit_code == 0, export.output
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        assert json.loads(archive.read("subject.json"))["subject_id"] == subjects[1]
    deleted = _cli(db_url, tmp_path, "delete-subject", subjects[2], "--json")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.output)["records_deleted"] == sum(r.subject_id == subjects[2] for r in records[:30])
    exported = _cli(db_url, tmp_path, "tombstones", "export", "--out", tmp_path / "tombstones.json")
    assert exported.exit_code == 0 and "1 tombstone(s)" in exported.output, exported.output
    assert subjects[2] not in (tmp_path / "tombstones.json").read_text()
    applied = _cli(db_url, tmp_path, "tombstones", "apply", tmp_path / "tombstones.json")
    assert applied.exit_code == 0 and "0 subject(s) present here were shredded" in applied.output, applied.output
    assert _cli(db_url, tmp_path, "principal", "add", "tina", "--role", "trainer").exit_code == 0
    token = _cli(db_url, tmp_path, "token", "create", "tina", "--scope", "stats", "--days", "1")
    assert token.exit_code == 0 and token.output.startswith("smv_"), token.output
    token_value = token.output.splitlines()[0]
    as_token = runner.invoke(app, ["vault", "stats", "--json", "--key-file", str(tmp_path / "vault.key"), "--token",
                                   token_value, "--db", db_url])
    assert as_token.exit_code == 0, as_token.output
    stats = json.loads(as_token.output)
    assert stats["records"] == 30 - json.loads(deleted.output)["records_deleted"]
    assert stats["consenting_subjects"]["model-training"] == len(subjects) - 2
    assert stats["deleted_subjects"] == 1
    revoke = _cli(db_url, tmp_path, "token", "revoke", token_value.split("_")[1])
    assert revoke.exit_code == 0, revoke.output
    rotate = _cli(db_url, tmp_path, "rotate-keys", "--new-key-file", tmp_path / "vault2.key")
    assert rotate.exit_code == 0 and "rewrapped" in rotate.output, rotate.output
    (tmp_path / "vault.key").unlink()
    (tmp_path / "vault2.key").rename(tmp_path / "vault.key")
    verify = _cli(db_url, tmp_path, "verify")
    assert verify.exit_code == 0 and "audit log intact" in verify.output, verify.output


def _simmim(*args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "simmim.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_real_entry_point_gives_one_line_errors_and_exit_1_on_tampering(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'vault.db'}"
    env = {"SIMMIM_VAULT_URL": db_url, "SIMMIM_VAULT_PASSPHRASE": "a long enough passphrase",
           "SIMMIM_VAULT_AUDIT_KEY": str(tmp_path / "audit.key"), "SIMMIM_VAULT_PRINCIPAL": "admin"}
    assert _simmim("vault", "init", env=env).returncode == 0
    wrong = _simmim("vault", "stats", env={**env, "SIMMIM_VAULT_PASSPHRASE": "not the passphrase"})
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        f"error: wrong passphrase or key for the vault at {db_url}; nothing was decrypted"]
    run_sql(db_url, "DROP TRIGGER vault_audit_log_no_update")
    run_sql(db_url, "UPDATE vault_audit_log SET actor = 'mallory' WHERE seq = 1")
    verify = _simmim("vault", "verify", env=env)
    assert verify.returncode == 1, verify.stderr
    assert "TAMPERED: entry 1 was modified: its content does not match its hash" in verify.stdout
    assert "Traceback" not in verify.stderr + wrong.stderr


@pytest.mark.parametrize("args,message", [
    (["export-subject", "ghost", "--out", "x.zip"], "error: subject 'ghost' is not in the vault"),
    (["consent", "grant", "s1", "--purpose", "marketing", "--notice-version", "v1"],
     "error: purpose 'marketing' is not declared"),
])
def test_cli_errors_name_the_problem(db_url, tmp_path, args, message):
    assert _cli(db_url, tmp_path, "init", "--new-key").exit_code == 0
    result = _cli(db_url, tmp_path, *args)
    assert result.exit_code != 0
    assert message.removeprefix("error: ") in str(result.exception)
