"""Faults: a process killed in the middle of an ingest, and ingests racing each other (real processes)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import TEST_KEY, run_sql

WORKER = Path(__file__).with_name("ingest_worker.py")


def _worker(db_url, prefix, count, *pause) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), db_url, TEST_KEY.hex(), prefix, str(count),
                             *map(str, pause)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _counts(db_url) -> dict:
    return {table: run_sql(db_url, f"SELECT count(*) FROM {table}")[0][0]
            for table in ("vault_subjects", "vault_subject_keys", "vault_records", "vault_audit_log")}


def _orphans(db_url) -> tuple[int, int]:
    keys_without_subject = run_sql(db_url, "SELECT count(*) FROM vault_subject_keys k WHERE NOT EXISTS "
                                           "(SELECT 1 FROM vault_subjects s WHERE s.id = k.subject_pk)")[0][0]
    subjects_without_key = run_sql(db_url, "SELECT count(*) FROM vault_subjects s WHERE NOT EXISTS "
                                           "(SELECT 1 FROM vault_subject_keys k WHERE k.subject_pk = s.id)")[0][0]
    return keys_without_subject, subjects_without_key


def test_kill_9_in_the_middle_of_a_batch_leaves_nothing_of_it(vault, db_url, records, tmp_path):
    vault.ingest(records[:10])
    vault.close()
    before = _counts(db_url)
    marker = tmp_path / "paused"
    worker = _worker(db_url, "killed", 40, 25, marker)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert worker.poll() is None, worker.communicate()[0]
        assert time.monotonic() < deadline, "the worker never reached the middle of its batch"
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    after = _counts(db_url)
    assert after["vault_records"] == before["vault_records"]
    assert after["vault_subjects"] == before["vault_subjects"]
    assert after["vault_subject_keys"] == before["vault_subject_keys"]
    assert _orphans(db_url) == (0, 0)
    assert after["vault_audit_log"] == before["vault_audit_log"]  # the whole transaction, its log entry too, is gone
    from simmim.vault import Vault

    with Vault.open(db_url, vault_key(), principal="admin", audit_key=vault.audit_key.path) as reopened:
        assert reopened.verify().ok
        rerun = _worker(db_url, "killed", 40)
        assert rerun.wait(timeout=120) == 0, rerun.communicate()[0]
        assert reopened.stats()["records"] == 10 + 40
        assert reopened.verify().ok


def vault_key():
    from simmim.vault import KeySource

    return KeySource.key(TEST_KEY)


def test_two_ingests_at_once_both_land_whole_and_share_subjects(vault, db_url):
    vault.close()
    first, second = _worker(db_url, "alpha", 60), _worker(db_url, "beta", 60)
    outputs = [first.communicate(timeout=120)[0], second.communicate(timeout=120)[0]]
    assert (first.returncode, second.returncode) == (0, 0), outputs
    counts = _counts(db_url)
    assert counts["vault_records"] == 120
    subjects = run_sql(db_url, "SELECT count(DISTINCT ref) FROM vault_subjects")[0][0]
    assert counts["vault_subjects"] == subjects  # both batches hold the same people: no subject twice
    assert counts["vault_subject_keys"] == subjects
    from simmim.vault import Vault

    with Vault.open(db_url, vault_key(), principal="admin", audit_key=vault.audit_key.path) as reopened:
        assert reopened.verify().ok


def test_two_ingests_of_the_same_ids_one_wins_whole(vault, db_url):
    vault.close()
    first, second = _worker(db_url, "same", 30), _worker(db_url, "same", 30)
    outputs = [first.communicate(timeout=120)[0], second.communicate(timeout=120)[0]]
    assert sorted((first.returncode, second.returncode)) == [0, 3], outputs
    assert any("record 'same-0': record id is already in the vault" in out for out in outputs)
    assert _counts(db_url)["vault_records"] == 30
