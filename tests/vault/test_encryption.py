"""Encryption at rest: chunking, binding of ciphertexts to their record, nonce bound, key sources, rotation."""

import base64
import dataclasses
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simmim.errors import VaultError
from simmim.vault import Argon2Cost, KeySource, Vault, envelope, keys, write_key_file
from simmim.vault.envelope import PayloadAuthenticationError, open_payload, seal_payload

from .conftest import TEST_KEY, run_sql, subjects_of

KEY = os.urandom(32)
BINDING = {"record_ref": "r1", "subject_ref": "s1", "key_version": 1, "revision": 1}
FAST_ARGON = Argon2Cost(memory_kib=1024, iterations=1, lanes=1)


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 1000])
def test_chunked_payloads_round_trip_with_one_nonce_per_chunk(size):
    plaintext = os.urandom(size)
    sealed = seal_payload(KEY, plaintext, chunk_bytes=100, **BINDING)
    chunks = envelope.chunk_count(size, 100)
    assert len(sealed) == size + chunks * (envelope.NONCE_BYTES + envelope.TAG_BYTES)
    nonces = {sealed[i * 128:i * 128 + 12] for i in range(chunks)}
    assert len(nonces) == chunks
    assert open_payload(KEY, sealed, chunk_bytes=100, plaintext_bytes=size, what="record x", **BINDING) == plaintext


@pytest.mark.parametrize("field,value", [("record_ref", "r2"), ("subject_ref", "s2"), ("key_version", 2),
                                         ("revision", 2)])
def test_a_ciphertext_opens_only_for_its_record_subject_key_version_and_revision(field, value):
    sealed = seal_payload(KEY, b"payload" * 50, chunk_bytes=100, **BINDING)
    with pytest.raises(PayloadAuthenticationError, match="record x: ciphertext chunk 1 of 4"):
        open_payload(KEY, sealed, chunk_bytes=100, plaintext_bytes=350, what="record x", **{**BINDING, field: value})


def test_reordered_dropped_or_appended_chunks_fail():
    plaintext = os.urandom(300)
    sealed = seal_payload(KEY, plaintext, chunk_bytes=100, **BINDING)
    swapped = sealed[128:256] + sealed[:128] + sealed[256:]
    with pytest.raises(PayloadAuthenticationError, match="chunk 1 of 3"):
        open_payload(KEY, swapped, chunk_bytes=100, plaintext_bytes=300, what="x", **BINDING)
    with pytest.raises(PayloadAuthenticationError, match="cut or extended"):
        open_payload(KEY, sealed[:256], chunk_bytes=100, plaintext_bytes=300, what="x", **BINDING)
    with pytest.raises(PayloadAuthenticationError, match="chunk 1 of 2"):
        open_payload(KEY, sealed[:256], chunk_bytes=100, plaintext_bytes=200, what="x", **BINDING)


def test_large_payloads_are_chunked_in_the_vault(db_url, key_source, records):
    with Vault.create(db_url, key_source, chunk_bytes=1024) as vault:
        vault.ingest(records[:3])
        sizes = run_sql(db_url, "SELECT plaintext_bytes, chunk_bytes, length(payload) FROM vault_records")
        for plain, chunk, stored in sizes:
            assert chunk == 1024 and plain > 3 * 1024
            assert stored == plain + envelope.chunk_count(plain, chunk) * 28
        vault.grant_consent(subjects_of(records[:3]), "evaluation", notice_version="v1")
        assert len(vault.release("evaluation").records) == 3


def test_a_ciphertext_moved_to_another_record_fails_naming_that_record(vault, db_url, records):
    vault.ingest(records[:2])
    vault.grant_consent(subjects_of(records[:2]), "model-training", notice_version="v1")
    first, second = run_sql(db_url, "SELECT id, ref, payload, plaintext_bytes FROM vault_records ORDER BY id")
    run_sql(db_url, "UPDATE vault_records SET payload = :p, plaintext_bytes = :n WHERE id = :i", p=first.payload,
            n=first.plaintext_bytes, i=second.id)
    with pytest.raises(PayloadAuthenticationError, match=f"record {second.ref[:16]}.*fails authentication"):
        vault.release("model-training")


def test_keys_are_versioned_before_the_nonce_bound_is_reached(vault, db_url, records, monkeypatch):
    monkeypatch.setattr(envelope, "MAX_MESSAGES_PER_KEY", 3)
    subject = records[0].subject_id
    own = [r for r in records if r.subject_id == subject][:5]
    vault.ingest(own)
    versions = run_sql(db_url, "SELECT version, encryptions FROM vault_subject_keys ORDER BY version")
    assert [tuple(v) for v in versions] == [(1, 3), (2, 2)]
    vault.ingest([dataclasses.replace(own[0], record_id="one-more")])  # a later batch counts on the stored key
    versions = run_sql(db_url, "SELECT version, encryptions FROM vault_subject_keys ORDER BY version")
    assert [tuple(v) for v in versions] == [(1, 3), (2, 3)]
    own = [*own, dataclasses.replace(own[0], record_id="one-more")]
    vault.grant_consent(subject, "model-training", notice_version="v1")
    assert sorted(r.record_id for r in vault.release("model-training").records) == sorted(r.record_id for r in own)


def test_wrong_passphrase_is_a_clear_error_and_decrypts_nothing(db_url, records):
    right = KeySource.passphrase("correct horse battery staple", FAST_ARGON)
    Vault.create(db_url, right).close()
    with pytest.raises(VaultError, match="wrong passphrase or key .* nothing was decrypted"):
        Vault.open(db_url, KeySource.passphrase("incorrect horse battery", FAST_ARGON), principal="admin")
    with pytest.raises(VaultError, match="unlocked by a passphrase, not a key"):
        Vault.open(db_url, KeySource.key(TEST_KEY), principal="admin")
    denied = run_sql(db_url, "SELECT outcome FROM vault_audit_log WHERE action = 'unlock'")
    assert [row.outcome for row in denied] == ["denied"]
    with Vault.open(db_url, right, principal="admin") as vault:
        vault.ingest(records[:1])


def test_short_passphrase_and_malformed_key_files_are_refused(tmp_path):
    with pytest.raises(VaultError, match="at least 12 characters"):
        KeySource.passphrase("short")
    (tmp_path / "bad.key").write_text("not a key\n")
    with pytest.raises(VaultError, match="does not hold a 32-byte key"):
        KeySource.key_file(tmp_path / "bad.key")
    with pytest.raises(VaultError, match="cannot read the vault key file"):
        KeySource.key_file(tmp_path / "missing.key")


def test_key_file_and_environment_sources_give_the_same_key(tmp_path, monkeypatch):
    path = write_key_file(tmp_path / "vault.key")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    from_file = KeySource.key_file(path)
    monkeypatch.setenv("SIMMIM_VAULT_KEY", base64.b64encode(from_file.secret).decode())
    assert KeySource.from_environment().secret == from_file.secret
    monkeypatch.setenv("SIMMIM_VAULT_KEY", from_file.secret.hex())
    assert KeySource.from_environment().secret == from_file.secret
    with pytest.raises(VaultError, match="exists"):
        write_key_file(path)


def test_rotation_rewraps_data_keys_without_touching_records(vault, db_url, records, audit_key_path):
    vault.ingest(records)
    before_records = run_sql(db_url, "SELECT ref, payload FROM vault_records ORDER BY ref")
    before_keys = run_sql(db_url, "SELECT id, wrapped, kek_id FROM vault_subject_keys ORDER BY id")
    new_source = KeySource.passphrase("a brand new passphrase", FAST_ARGON)
    assert vault.rotate_keys(new_source) == len(before_keys)
    after_keys = run_sql(db_url, "SELECT id, wrapped, kek_id FROM vault_subject_keys ORDER BY id")
    assert all(a.wrapped != b.wrapped and a.kek_id != b.kek_id for a, b in zip(after_keys, before_keys, strict=True))
    assert run_sql(db_url, "SELECT ref, payload FROM vault_records ORDER BY ref") == before_records
    vault.grant_consent(subjects_of(records), "evaluation", notice_version="v1")
    assert len(vault.release("evaluation").records) == len(records)  # the live vault uses the new KEK
    vault.close()
    with pytest.raises(VaultError, match="unlocked by a passphrase"):
        Vault.open(db_url, KeySource.key(TEST_KEY), principal="admin")
    with Vault.open(db_url, new_source, principal="admin", audit_key=audit_key_path) as reopened:
        assert len(reopened.release("evaluation").records) == len(records)
        assert reopened.verify().ok


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_wrapping_contexts_are_the_json_arrays_of_their_parts(parts):
    # Stored wrapped keys were bound to this exact encoding; it must not drift.
    assert keys._context(*parts) == b"simmim-vault/v1/" + json.dumps(parts, separators=(",", ":")).encode()
