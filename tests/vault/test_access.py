"""Access control: roles, default deny, purpose binding, scoped expiring revocable tokens, every decision logged."""

import json
from datetime import timedelta

import pytest

from simmim.errors import VaultError
from simmim.vault import AccessDeniedError, Vault
from simmim.vault.access import ACTIONS, ROLES, decide

from .conftest import run_sql, subjects_of


def _as(db_url, key_source, principal=None, token=None) -> Vault:
    return Vault.open(db_url, key_source, principal=principal, token=token)


def test_decide_denies_by_default():
    assert not decide(None, "release", "model-training").allowed
    assert not decide("no-such-role", "stats", "").allowed
    for role, grants in ROLES.items():
        for action in ACTIONS:
            if action not in grants:
                assert not decide(role, action, "").allowed, (role, action)
    assert decide("trainer", "release", "model-training").allowed
    assert not decide("trainer", "release", "analytics").allowed
    assert decide("analyst", "release", "analytics").allowed
    assert not decide("analyst", "release", "model-training").allowed
    assert not decide("auditor", "release", "model-training").allowed
    assert decide("admin", "release", "anything-declared").allowed


def test_roles_are_enforced_by_the_vault_and_every_decision_is_logged(vault, db_url, key_source, records):
    vault.ingest(records)
    vault.grant_consent(subjects_of(records), "model-training", notice_version="v1")
    vault.grant_consent(subjects_of(records), "analytics", notice_version="v1")
    for name, role in [("tina", "trainer"), ("ann", "analyst"), ("audrey", "auditor"), ("stu", "steward")]:
        vault.add_principal(name, role)
    with _as(db_url, key_source, "tina") as trainer:
        assert len(trainer.release("model-training").records) == len(records)
        with pytest.raises(AccessDeniedError, match="tina may not release for analytics"):
            trainer.release("analytics")
        with pytest.raises(AccessDeniedError, match="tina may not ingest"):
            trainer.ingest(records[:1])
        with pytest.raises(AccessDeniedError):
            trainer.delete_subject(records[0].subject_id)
    with _as(db_url, key_source, "audrey") as auditor, pytest.raises(AccessDeniedError):
        auditor.export_subject(records[0].subject_id, "never.zip")
    with _as(db_url, key_source, "stu") as steward:
        with pytest.raises(AccessDeniedError):
            steward.release("model-training")
        with pytest.raises(AccessDeniedError):
            steward.add_principal("mallory", "admin")
    with _as(db_url, key_source, "mallory") as stranger, pytest.raises(AccessDeniedError, match="unknown principal"):
        stranger.stats()
    with _as(db_url, key_source, None) as nobody, pytest.raises(AccessDeniedError, match="nobody"):
        nobody.release("model-training")
    decisions = run_sql(db_url, "SELECT actor, action, purpose, outcome FROM vault_audit_log "
                                "WHERE action LIKE 'authorize:%' ORDER BY seq")
    denied = [(d.actor, d.action, d.purpose) for d in decisions if d.outcome == "denied"]
    assert denied == [("tina", "authorize:release", "analytics"), ("tina", "authorize:ingest", ""),
                      ("tina", "authorize:delete-subject", "data-subject-request"),
                      ("audrey", "authorize:export-subject", "data-subject-request"),
                      ("stu", "authorize:release", "model-training"), ("stu", "authorize:manage-principals", ""),
                      ("mallory", "authorize:stats", ""), ("(none)", "authorize:release", "model-training")]
    assert ("tina", "authorize:release", "model-training", "allowed") in [tuple(d) for d in decisions]


def test_tokens_are_shown_once_stored_as_hmac_scoped_and_revocable(vault, db_url, key_source, records):
    vault.ingest(records)
    vault.grant_consent(subjects_of(records), "model-training", notice_version="v1")
    vault.add_principal("tina", "trainer")
    token = vault.create_token("tina", ["release:model-training"], expires_in=timedelta(hours=1))
    prefix, token_id, secret = token.split("_", 2)
    assert prefix == "smv" and len(secret) == 43  # 32 bytes, base64url
    stored = run_sql(db_url, "SELECT * FROM vault_tokens")
    assert len(stored) == 1 and secret not in str(stored) and token not in str(stored)
    assert secret not in str(run_sql(db_url, "SELECT * FROM vault_audit_log"))
    with _as(db_url, key_source, token=token) as holder:
        assert holder.principal == "tina"
        assert holder.release("model-training").subject_count == len(subjects_of(records))
        with pytest.raises(AccessDeniedError, match="not scoped for stats"):
            holder.stats()  # the role allows it, the token does not
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(AccessDeniedError, match="unknown token"):
        _as(db_url, key_source, token=tampered)
    with pytest.raises(VaultError, match="not a vault token"):
        _as(db_url, key_source, token="Bearer abc")
    vault.revoke_token(token_id)
    with pytest.raises(AccessDeniedError, match="revoked"):
        _as(db_url, key_source, token=token)
    outcomes = run_sql(db_url, "SELECT outcome, details FROM vault_audit_log WHERE action = 'authenticate' "
                               "ORDER BY seq")
    assert [o.outcome for o in outcomes] == ["allowed", "denied", "denied"]
    assert json.loads(outcomes[-1].details)["reason"] == f"token {token_id} was revoked"


def test_expired_tokens_and_bad_scopes_are_refused(vault, db_url, key_source):
    vault.add_principal("ann", "analyst")
    token = vault.create_token("ann", ["stats"], expires_in=timedelta(hours=1))
    token_id = token.split("_")[1]
    run_sql(db_url, "UPDATE vault_tokens SET expires_at = created_at - interval '1 hour'" if "postgresql" in db_url
            else "UPDATE vault_tokens SET expires_at = datetime(created_at, '-1 hour')")
    with pytest.raises(AccessDeniedError, match=f"token {token_id} expired"):
        _as(db_url, key_source, token=token)
    with pytest.raises(VaultError, match="'launch-missiles' is not one of"):
        vault.create_token("ann", ["launch-missiles"])
    with pytest.raises(VaultError, match="does not exist"):
        vault.create_token("ghost", ["stats"])
    with pytest.raises(VaultError, match="role 'root' is not one of"):
        vault.add_principal("eve", "root")
    with pytest.raises(VaultError, match="principal name"):
        vault.add_principal("eve'; DROP TABLE vault_principals; --", "admin")
    assert vault.principals() == {"admin": "admin", "ann": "analyst"}


def test_an_allowed_operation_that_fails_is_logged_with_its_error_class_only(vault, db_url, records):
    vault.ingest(records[:3])
    with pytest.raises(VaultError, match="already in the vault"):
        vault.ingest(records[:3])
    last = run_sql(db_url, "SELECT action, outcome, details FROM vault_audit_log ORDER BY seq DESC")[0]
    assert (last.action, last.outcome) == ("authorize:ingest", "allowed")
    assert json.loads(last.details) == {"reason": "role admin", "operation": "failed", "error": "VaultError"}
    assert records[0].record_id not in last.details
    assert vault.verify().ok


def test_an_import_is_authorised_before_any_file_is_read(vault, db_url, key_source, records, tmp_path):
    vault.add_principal("ann", "analyst")
    with _as(db_url, key_source, "ann") as analyst, pytest.raises(AccessDeniedError, match="ann may not ingest"):
        analyst.ingest_path(tmp_path / "does-not-exist")  # denied, not "no such file"


def test_reading_consents_principals_and_lineage_needs_a_role_too(vault, db_url, key_source, records):
    vault.ingest(records[:2])
    vault.add_principal("tina", "trainer")
    vault.add_principal("stu", "steward")
    with _as(db_url, key_source, "tina") as trainer:
        with pytest.raises(AccessDeniedError, match="tina may not consent"):
            trainer.consents(records[0].subject_id)
        with pytest.raises(AccessDeniedError, match="tina may not manage-principals"):
            trainer.principals()
        assert trainer.models() == [] and "model-training" in trainer.purposes()
    with _as(db_url, key_source, "stu") as steward:
        assert steward.consents(records[0].subject_id) == {}
