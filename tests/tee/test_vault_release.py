"""The two methods the vault gained for attested key release: `record_event` appends to the audit chain as
the acting principal; `kek_for_attested_release` hands out the KEK only to a key manager, logged in the same
transaction, and only for vaults a key (not a passphrase) opens."""

from __future__ import annotations

import pytest

from simmim.errors import VaultError
from simmim.vault import AccessDeniedError, Argon2Cost, KeySource, Vault


def test_record_event_appends_to_the_chain(vault):
    vault.record_event("tee-key-release", "workload", outcome="denied", details={"reason": "debug"})
    entry = vault.audit_entries(limit=2)[0]  # the newest entry is this read's own authorisation
    assert (entry["actor"], entry["action"], entry["resource"], entry["outcome"]) == (
        "admin", "tee-key-release", "workload", "denied")
    assert entry["details"] == {"reason": "debug"}
    assert vault.verify().ok


def test_record_event_refuses_an_unknown_outcome(vault):
    with pytest.raises(VaultError, match="audit outcome must be"):
        vault.record_event("tee-key-release", outcome="maybe")


def test_the_kek_is_released_to_a_key_manager_and_logged(vault, kek):
    assert vault.kek_for_attested_release("workload:abc", {"tee": "aws-nitro"}) == kek
    authorised, released, _read = vault.audit_entries(limit=3)
    assert (authorised["action"], authorised["outcome"]) == ("authorize:rotate-keys", "allowed")
    assert (released["action"], released["resource"], released["outcome"], released["details"]) == (
        "tee-key-release", "workload:abc", "allowed", {"tee": "aws-nitro"})


def test_a_trainer_cannot_take_the_kek(vault_url, vault, kek):
    with (Vault.open(vault_url, KeySource.key(kek), principal="trainer") as as_trainer,
          pytest.raises(AccessDeniedError, match="may not rotate-keys")):
        as_trainer.kek_for_attested_release("workload:abc", {})
    denial = vault.audit_entries(limit=2)[0]
    assert (denial["actor"], denial["action"], denial["outcome"]) == ("trainer", "authorize:rotate-keys", "denied")


def test_a_passphrase_vault_is_refused(tmp_path):
    source = KeySource.passphrase("correct horse battery", Argon2Cost(memory_kib=8 * 1024, iterations=1, lanes=1))
    with Vault.create(f"sqlite:///{tmp_path / 'p.db'}", source) as vault:
        with pytest.raises(VaultError, match="needs a vault unlocked by a key file"):
            vault.kek_for_attested_release("workload:abc", {})
        assert not any(e["action"] == "tee-key-release" for e in vault.audit_entries())
