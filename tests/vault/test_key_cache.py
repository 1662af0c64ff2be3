"""Ingest keeps the subjects' keys it committed (`subject_keys.KeyCache`) only while nobody else writes."""

import dataclasses

import pytest

from simmim.errors import VaultError
from simmim.vault import Vault

from .conftest import run_sql


def _of(records, subject_id, prefix):
    return [dataclasses.replace(r, record_id=f"{prefix}-{i}") for i, r in enumerate(records)
            if r.subject_id == subject_id]


def _count(db_url, vault, subject_id) -> int:
    return run_sql(db_url, "SELECT sum(k.encryptions) FROM vault_subject_keys k JOIN vault_subjects s "
                           "ON s.id = k.subject_pk WHERE s.ref = :ref", ref=vault.subject_ref(subject_id))[0][0]


def test_a_subject_deleted_by_another_vault_object_is_refused_not_sealed_from_the_cache(vault, db_url, key_source,
                                                                                        records):
    person = records[0].subject_id
    vault.ingest(_of(records, person, "a"))  # a new subject's key has no row id yet: read back next time
    vault.ingest(_of(records, person, "a2"))
    assert vault._key_cache.slots  # now the subject's key is kept for the next ingest
    with Vault.open(db_url, key_source, principal="admin") as other:  # another process, in effect
        other.delete_subject(person)
    with pytest.raises(VaultError, match="its subject was deleted"):
        vault.ingest(_of(records, person, "b"))


def test_nonce_counts_stay_exact_when_two_vault_objects_take_turns(vault, db_url, key_source, records):
    person = records[0].subject_id
    theirs = len(_of(records, person, "x"))
    with Vault.open(db_url, key_source, principal="admin") as other:
        for turn, writer in enumerate((vault, vault, other, vault, other, other, vault)):
            writer.ingest(_of(records, person, f"t{turn}"))
            assert _count(db_url, vault, person) == (turn + 1) * theirs  # one AES-GCM message per record
    released = vault.grant_consent([person], "model-training", notice_version="v1")
    assert released == 0 and len(vault.release("model-training").records) == 7 * theirs  # all open


def test_any_other_operation_drops_the_cached_keys(vault, records):
    vault.ingest(records[:10])
    vault.ingest([dataclasses.replace(r, record_id=f"again-{i}") for i, r in enumerate(records[:10])])
    assert vault._key_cache.slots
    vault.grant_consent([records[0].subject_id], "model-training", notice_version="v1")
    assert not vault._key_cache.slots and vault._key_cache.seq is None
