"""The in-enclave attester against a fake Gramine attestation device (a directory with its files): it binds
the broker's nonce and its key into the report data, reads the quote, completes a key release through the
exchange directory with a real broker, and keys the encrypted mount with a key derived from the KEK. The
enclave itself and its quote signature are not exercised here (no SGX)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from simmim.tee import SGX, AttestationError, Claims, KeyBroker, NonceStore, Policy, binding
from simmim.tee.attester import MOUNT_KEY_NAME, GramineAttester, mount_key, request_key

FAKE_QUOTE = b"quote from the fake device"
MRENCLAVE = "ab" * 32
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def device(tmp_path) -> Path:
    """A fake /dev/attestation: the files Gramine exposes, with a fixed quote."""
    folder = tmp_path / "attestation"
    (folder / "keys").mkdir(parents=True)
    (folder / "attestation_type").write_text("dcap\n")
    (folder / "quote").write_bytes(FAKE_QUOTE)
    (folder / "user_report_data").write_bytes(bytes(64))
    return folder


class FakeSgxHardware:
    """Stands in for the DCAP verifier: accepts the fake quote and reports what the enclave wrote as report
    data, as real SGX hardware would sign it."""

    tee_format = "dcap"

    def __init__(self, device: Path) -> None:
        self.device = device

    def verify(self, evidence: bytes, *, now: datetime) -> Claims:
        if evidence != FAKE_QUOTE:
            raise AttestationError("dcap: not the fake quote")
        return Claims(tee=SGX, measurements={"mrenclave": MRENCLAVE, "mrsigner": "cd" * 32}, debug=False,
                      tcb={"status": "UpToDate", "advisory_ids": [], "isv_svn": 1},
                      report_data=(self.device / "user_report_data").read_bytes(), not_before=now - timedelta(days=1),
                      not_after=now + timedelta(days=1), verified_at=now, collateral_issued_at=now)


def test_the_quote_carries_the_binding_of_nonce_and_key(device):
    attester = GramineAttester(device)
    nonce = b"\x05" * 32
    assert attester.evidence_for(nonce) == FAKE_QUOTE
    assert (device / "user_report_data").read_bytes() == binding(nonce, attester.public_key)


def test_a_non_dcap_enclave_is_a_clear_error(device):
    (device / "attestation_type").write_text("none\n")
    with pytest.raises(AttestationError, match="attestation type is 'none'"):
        GramineAttester(device).evidence_for(b"\x05" * 32)


def test_outside_an_enclave_the_error_says_so(tmp_path):
    with pytest.raises(AttestationError, match="is this running inside a Gramine SGX enclave"):
        GramineAttester(tmp_path / "absent").evidence_for(b"\x05" * 32)


def test_a_key_release_round_trip_keys_the_encrypted_mount(device, tmp_path, vault, kek):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    policy = Policy.from_dict({"allow": [SGX], SGX: {"mrenclave": [MRENCLAVE], "min_isv_svn": 1}})
    nonces = NonceStore(f"sqlite:///{tmp_path / 'nonces.db'}")
    broker = KeyBroker(vault, policy, nonces, verifiers={"dcap": FakeSgxHardware(device)}, clock=lambda: NOW)
    nonce = broker.challenge()
    (exchange / "nonce").write_text(nonce.hex())

    def host_relay() -> None:  # moves the enclave's evidence to the broker and the grant back
        while not (exchange / "evidence.quote").exists():
            time.sleep(0.01)
        public_key = bytes.fromhex((exchange / "public_key").read_text())
        grant = broker.release("dcap", (exchange / "evidence.quote").read_bytes(), public_key, nonce)
        partial = exchange / "grant.json.partial"  # published whole: the enclave reads it once it exists
        partial.write_text(grant.to_json())
        partial.replace(exchange / "grant.json")

    relay = threading.Thread(target=host_relay)
    relay.start()
    attester = GramineAttester(device)
    released = request_key(attester, exchange, timeout_seconds=30, poll_seconds=0.01)
    relay.join()
    nonces.close()
    assert released == kek
    attester.provision_mount_key(released)
    assert (device / "keys" / MOUNT_KEY_NAME).read_bytes() == mount_key(kek)
    assert len(mount_key(kek)) == 16 and mount_key(kek) != mount_key(kek, "other")
    assert not any(kek.hex() in path.read_text(errors="ignore") for path in exchange.iterdir())


def test_no_grant_in_time_is_a_clear_error(device, tmp_path):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    (exchange / "nonce").write_text("05" * 32)
    with pytest.raises(AttestationError, match="no key grant .* after 0 s"):
        request_key(GramineAttester(device), exchange, timeout_seconds=0.05, poll_seconds=0.01)
    assert (exchange / "public_key").exists() and (exchange / "evidence.quote").read_bytes() == FAKE_QUOTE


def test_a_missing_nonce_is_a_clear_error(device, tmp_path):
    with pytest.raises(AttestationError, match="no usable broker nonce"):
        request_key(GramineAttester(device), tmp_path)
