"""Attestation-gated key release end to end, with test CAs minting Nitro- and SEV-SNP-format evidence that the
production verifiers check (test roots given only to their constructors): matching evidence gets the KEK
sealed to the workload's key, which opens the vault; wrong measurement, debug, stale or replayed nonces,
unbound keys and untrusted roots are refused; every decision is in the vault's audit log."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from simmim.tee import (
    NITRO,
    SEV_SNP,
    AttestationError,
    KeyBroker,
    KeyGrant,
    KeyReleaseRefused,
    NonceStore,
    Policy,
    binding,
    open_grant,
)
from simmim.vault import KeySource, Vault

MEASUREMENT = b"\x42" * 48
PCRS = {0: b"\x10" * 48, 1: b"\x11" * 48, 2: b"\x12" * 48, 3: bytes(48)}
SNP_MIN_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
POLICY = {"allow": [NITRO, SEV_SNP], "nonce_ttl_seconds": 60,
          NITRO: {f"pcr{i}": [PCRS[i].hex()] for i in range(3)},
          SEV_SNP: {"measurement": [MEASUREMENT.hex()], "min_tcb": SNP_MIN_TCB}}


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class Workload:
    """The enclave's side: a fresh X25519 key pair and evidence bound to (nonce, public key)."""

    def __init__(self, nitro_ca, snp_ca, clock):
        self.private_key = X25519PrivateKey.generate()
        self.public_key = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.nitro_ca, self.snp_ca, self.clock = nitro_ca, snp_ca, clock

    def evidence(self, fmt: str, nonce: bytes, *, debug: bool = False, measurement: bytes | None = None,
                 bound_key: bytes | None = None):
        """Nitro: ``measurement`` replaces PCR0; SEV-SNP: the launch measurement."""
        report_data = binding(nonce, bound_key or self.public_key)
        if fmt == "nitro":
            pcrs = {i: bytes(48) for i in PCRS} if debug else {**PCRS, 0: measurement or PCRS[0]}
            return self.nitro_ca.document(now=self.clock(), pcrs=pcrs, nonce=nonce,
                                          public_key=bound_key or self.public_key, user_data=report_data)
        return self.snp_ca.evidence(measurement=measurement or MEASUREMENT, report_data=report_data, debug=debug)


@pytest.fixture
def clock():
    return Clock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def nonce_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'nonces.db'}"


@pytest.fixture
def make_broker(vault, nitro_ca, snp_ca, clock, nonce_url):
    stores = []

    def make(policy: dict = POLICY) -> KeyBroker:
        stores.append(NonceStore(nonce_url))
        verifiers = {"nitro": nitro_ca.verifier(), "snp": snp_ca.verifier()}
        return KeyBroker(vault, Policy.from_dict(policy), stores[-1], verifiers=verifiers, clock=clock)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def workload(nitro_ca, snp_ca, clock) -> Workload:
    return Workload(nitro_ca, snp_ca, clock)


def _last_decision(vault) -> dict:
    entries = [e for e in vault.audit_entries(limit=20) if e["action"] == "tee-key-release"]
    return entries[-1]


@pytest.mark.parametrize("fmt", ["nitro", "snp"])
def test_matching_evidence_gets_the_kek_and_the_workload_opens_the_vault(make_broker, workload, vault, vault_url,
                                                                         kek, fmt):
    broker = make_broker()
    nonce = broker.challenge()
    grant = broker.release(fmt, workload.evidence(fmt, nonce), workload.public_key, nonce)
    released = open_grant(grant, workload.private_key)
    assert released == kek
    with Vault.open(vault_url, KeySource.key(released), principal="trainer") as opened:
        assert len(opened.release("model-training").records) == 6
    decision = _last_decision(vault)
    assert decision["outcome"] == "allowed"
    assert decision["details"]["tee"] == (NITRO if fmt == "nitro" else SEV_SNP)
    assert decision["details"]["policy"] == broker.policy.digest
    assert decision["resource"].startswith("workload:")
    assert vault.verify().ok


def test_the_grant_opens_only_with_the_workloads_key_and_context(make_broker, workload, kek):
    broker = make_broker()
    nonce = broker.challenge()
    grant = broker.release("snp", workload.evidence("snp", nonce), workload.public_key, nonce)
    assert kek not in grant.sealed
    with pytest.raises(AttestationError, match="does not open"):
        open_grant(grant, X25519PrivateKey.generate())
    with pytest.raises(AttestationError, match="does not open"):
        open_grant(replace(grant, policy_digest="0" * 64), workload.private_key)  # info binds the policy


@pytest.mark.parametrize(("fmt", "change", "reason"), [
    ("nitro", {"measurement": b"\x66" * 48}, "pcr0 6666.* is not in the policy's allow-list"),
    ("snp", {"measurement": b"\x66" * 48}, "measurement 6666.* is not in the policy's allow-list"),
    ("nitro", {"debug": True}, "debug-mode workload; the policy forbids debug"),
    ("snp", {"debug": True}, "debug-mode workload; the policy forbids debug"),
    ("nitro", {"bound_key": b"\x09" * 32}, "report data does not bind this nonce and public key"),
    ("snp", {"bound_key": b"\x09" * 32}, "report data does not bind this nonce and public key"),
])
def test_evidence_the_policy_does_not_accept_is_refused_and_logged(make_broker, workload, vault, fmt, change, reason):
    broker = make_broker()
    nonce = broker.challenge()
    with pytest.raises(KeyReleaseRefused, match=reason):
        broker.release(fmt, workload.evidence(fmt, nonce, **change), workload.public_key, nonce)
    decision = _last_decision(vault)
    assert decision["outcome"] == "denied"
    assert re.search(reason, decision["details"]["reason"])


def test_a_stale_nonce_is_refused(make_broker, workload, clock, vault):
    broker = make_broker()
    nonce = broker.challenge()
    clock.now += timedelta(seconds=61)  # the policy's TTL is 60 s
    with pytest.raises(KeyReleaseRefused, match="stale nonce"):
        broker.release("snp", workload.evidence("snp", nonce), workload.public_key, nonce)
    assert _last_decision(vault)["details"]["reason"].startswith("stale nonce")


def test_a_replayed_nonce_is_refused_even_with_valid_evidence(make_broker, workload):
    broker = make_broker()
    nonce = broker.challenge()
    evidence = workload.evidence("nitro", nonce)
    broker.release("nitro", evidence, workload.public_key, nonce)
    with pytest.raises(KeyReleaseRefused, match="replayed nonce"):
        broker.release("nitro", evidence, workload.public_key, nonce)


def test_replay_is_refused_after_the_broker_restarts(make_broker, workload):
    first = make_broker()
    nonce = first.challenge()
    evidence = workload.evidence("snp", nonce)
    first.release("snp", evidence, workload.public_key, nonce)
    restarted = make_broker()  # a new broker and nonce store on the same database
    with pytest.raises(KeyReleaseRefused, match="replayed nonce"):
        restarted.release("snp", evidence, workload.public_key, nonce)


def test_a_nonce_the_broker_never_issued_is_refused(make_broker, workload):
    nonce = b"\x01" * 32
    with pytest.raises(KeyReleaseRefused, match="unknown nonce"):
        make_broker().release("snp", workload.evidence("snp", nonce), workload.public_key, nonce)


def test_a_failed_attempt_burns_the_nonce(make_broker, workload):
    broker = make_broker()
    nonce = broker.challenge()
    with pytest.raises(KeyReleaseRefused, match="debug"):
        broker.release("snp", workload.evidence("snp", nonce, debug=True), workload.public_key, nonce)
    with pytest.raises(KeyReleaseRefused, match="replayed nonce"):
        broker.release("snp", workload.evidence("snp", nonce), workload.public_key, nonce)


def test_evidence_from_an_untrusted_root_is_refused(make_broker, workload, rogue_nitro_ca, vault):
    broker = make_broker()
    nonce = broker.challenge()
    workload.nitro_ca = rogue_nitro_ca  # well-formed, right PCRs, right binding, wrong root
    with pytest.raises(KeyReleaseRefused, match=r"evidence rejected: nitro: cabundle\[0\] is not the trusted root"):
        broker.release("nitro", workload.evidence("nitro", nonce), workload.public_key, nonce)
    assert _last_decision(vault)["outcome"] == "denied"


def test_a_tee_type_the_policy_does_not_allow_is_refused(make_broker, workload):
    only_nitro = {"allow": [NITRO], NITRO: POLICY[NITRO]}
    broker = make_broker(only_nitro)
    nonce = broker.challenge()
    with pytest.raises(KeyReleaseRefused, match="TEE type amd-sev-snp is not allowed"):
        broker.release("snp", workload.evidence("snp", nonce), workload.public_key, nonce)


def test_an_unknown_format_and_a_bad_workload_key_are_refused(make_broker, workload):
    broker = make_broker()
    nonce = broker.challenge()
    with pytest.raises(KeyReleaseRefused, match="no verifier for evidence format 'sgx'"):
        broker.release("sgx", b"", workload.public_key, nonce)
    nonce = broker.challenge()
    with pytest.raises(KeyReleaseRefused, match="32-byte X25519 public key"):
        broker.release("snp", workload.evidence("snp", nonce), workload.public_key[:16], nonce)
    nonce, low_order = broker.challenge(), bytes(32)
    with pytest.raises(KeyReleaseRefused, match="not a usable X25519 public key"):
        broker.release("snp", workload.evidence("snp", nonce, bound_key=low_order), low_order, nonce)


def test_a_broker_acting_without_the_key_management_right_releases_nothing(vault_url, vault, kek, nitro_ca, snp_ca,
                                                                          clock, nonce_url, workload):
    with Vault.open(vault_url, KeySource.key(kek), principal="trainer") as as_trainer:
        broker = KeyBroker(as_trainer, Policy.from_dict(POLICY), NonceStore(nonce_url),
                           verifiers={"nitro": nitro_ca.verifier(), "snp": snp_ca.verifier()}, clock=clock)
        nonce = broker.challenge()
        with pytest.raises(KeyReleaseRefused, match="refused by the vault: access denied"):
            broker.release("snp", workload.evidence("snp", nonce), workload.public_key, nonce)
        broker.nonces.close()


def test_every_decision_is_in_the_audit_chain(make_broker, workload, vault):
    broker = make_broker()
    outcomes = []
    for debug in (False, True, False):
        nonce = broker.challenge()
        try:
            broker.release("snp", workload.evidence("snp", nonce, debug=debug), workload.public_key, nonce)
            outcomes.append("allowed")
        except KeyReleaseRefused:
            outcomes.append("denied")
    logged = [e["outcome"] for e in vault.audit_entries(limit=50) if e["action"] == "tee-key-release"]
    assert logged == outcomes == ["allowed", "denied", "allowed"]
    assert vault.verify().ok


def test_a_grant_survives_json_and_garbage_is_refused(make_broker, workload, kek):
    broker = make_broker()
    nonce = broker.challenge()
    grant = broker.release("snp", workload.evidence("snp", nonce), workload.public_key, nonce)
    assert open_grant(KeyGrant.from_json(grant.to_json()), workload.private_key) == kek
    with pytest.raises(AttestationError, match="not a key grant"):
        KeyGrant.from_json("{}")
