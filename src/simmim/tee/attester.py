"""The workload's side of key release, inside a Gramine SGX enclave. NOT built or run on these machines:
tested only against a fake attestation device (a directory with the same files) and a fake exchange.

Gramine exposes attestation as pseudo-files under ``/dev/attestation``:

* ``attestation_type``: ``dcap`` (or ``epid``, ``none``);
* ``user_report_data``: write 64 bytes; the next quote carries them as report data;
* ``quote``: read the DCAP quote over the enclave's report;
* ``keys/<name>``: write a 16-byte key to provision the encrypted mount whose ``key_name`` is ``<name>``.

`GramineAttester` makes the workload's X25519 key pair, writes the broker's binding into ``user_report_data``,
reads the quote, and once the broker's grant is opened, derives the data mount's key from the KEK and
provisions it. The KEK itself is never written anywhere.

The enclave has no network of its own here: `request_key` talks to the broker through an *exchange*
directory, an unencrypted mount the host can read and write (``deploy/gramine``). The host relays: it
writes the broker's ``nonce`` (hex), reads ``evidence.quote`` and ``public_key`` (hex), and writes the broker's
``grant.json``. Each side publishes a file whole, under a temporary name and then renamed, since the other
side reads a file as soon as it exists. Nothing in the exchange is secret: the grant opens only with the
enclave's private key, and the host relay is not part of SimMIM yet.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from simmim.errors import SimMIMError
from simmim.tee.broker import KeyGrant, binding, open_grant
from simmim.tee.claims import AttestationError

DEFAULT_DEVICE = Path("/dev/attestation")
DEFAULT_EXCHANGE = Path("/exchange")
MOUNT_KEY_NAME = "simmim_data"  # the manifest's encrypted mount names this key
MOUNT_KEY_BYTES = 16  # Gramine's encrypted files use 128-bit keys
REPORT_DATA_BYTES = 64
# What `python -m simmim.tee.attester` trains once the mount is keyed (fixed: nothing comes from argv or env).
ENCLAVE_CONFIG = Path("/app/train.toml")
ENCLAVE_OUT = Path("/data/runs/train")


def mount_key(kek: bytes, name: str = MOUNT_KEY_NAME) -> bytes:
    """The encrypted mount's key, derived from the KEK (HKDF-SHA256, info names the mount)."""
    return HKDF(algorithm=hashes.SHA256(), length=MOUNT_KEY_BYTES, salt=None,
                info=b"simmim-gramine-mount/" + name.encode()).derive(kek)


@dataclass
class GramineAttester:
    """Attests the enclave it runs in through Gramine's attestation device.

    Args:
        device: The attestation device directory; tests give a fake one.
    """

    device: Path = DEFAULT_DEVICE
    _private_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)

    @property
    def public_key(self) -> bytes:
        """The workload's raw X25519 public key (sent to the broker with the evidence)."""
        return self._private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def _read(self, name: str) -> bytes:
        try:
            return (self.device / name).read_bytes()
        except OSError as exc:
            raise AttestationError(f"cannot read {self.device / name}: {exc.strerror or exc}; is this running "
                                   f"inside a Gramine SGX enclave with remote attestation enabled?") from None

    def _write(self, name: str, data: bytes) -> None:
        try:
            with open(self.device / name, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise AttestationError(f"cannot write {self.device / name}: {exc.strerror or exc}") from None

    def attestation_type(self) -> str:
        return self._read("attestation_type").decode("ascii", "replace").strip()

    def quote(self, report_data: bytes) -> bytes:
        """A DCAP quote carrying ``report_data`` (64 bytes)."""
        if len(report_data) != REPORT_DATA_BYTES:
            raise AttestationError(f"report data must be {REPORT_DATA_BYTES} bytes, got {len(report_data)}")
        kind = self.attestation_type()
        if kind != "dcap":
            raise AttestationError(f"the enclave's attestation type is {kind!r}; the broker needs \"dcap\" "
                                   f"(set sgx.remote_attestation = \"dcap\" in the manifest)")
        self._write("user_report_data", report_data)
        quote = self._read("quote")
        if not quote:
            raise AttestationError(f"{self.device / 'quote'} returned no quote")
        return quote

    def evidence_for(self, nonce: bytes) -> bytes:
        """The quote answering the broker's challenge: its report data binds the nonce and our public key."""
        return self.quote(binding(nonce, self.public_key))

    def open_grant(self, grant: KeyGrant) -> bytes:
        """The KEK from the broker's grant (sealed to our key)."""
        return open_grant(grant, self._private_key)

    def provision_mount_key(self, kek: bytes, name: str = MOUNT_KEY_NAME) -> None:
        """Keys the encrypted mount ``name`` with a key derived from the KEK."""
        self._write(f"keys/{name}", mount_key(kek, name))


def _publish(path: Path, data: bytes) -> None:
    """Writes ``path`` so the host never sees it half written (a temporary name, then a rename)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def request_key(attester: GramineAttester, exchange: Path = DEFAULT_EXCHANGE, *, timeout_seconds: float = 300,
                poll_seconds: float = 0.2) -> bytes:
    """One key-release round trip through the exchange directory; returns the KEK.

    Raises:
        AttestationError: If the nonce is missing or malformed, no grant arrives in time, or the grant is not
            for this challenge or does not open with our key.
    """
    try:
        nonce = bytes.fromhex((exchange / "nonce").read_text().strip())
    except (OSError, ValueError) as exc:
        raise AttestationError(f"no usable broker nonce in {exchange / 'nonce'} ({exc})") from None
    quote = attester.evidence_for(nonce)
    _publish(exchange / "public_key", attester.public_key.hex().encode())
    _publish(exchange / "evidence.quote", quote)
    deadline = time.monotonic() + timeout_seconds
    grant_path = exchange / "grant.json"
    while not grant_path.exists():
        if time.monotonic() > deadline:
            raise AttestationError(f"no key grant in {grant_path} after {timeout_seconds:.0f} s: the broker refused "
                                   f"(see its audit log) or the host relay is not running")
        time.sleep(poll_seconds)
    grant = KeyGrant.from_json(grant_path.read_text())
    if grant.nonce != nonce:
        raise AttestationError("the key grant answers another challenge")
    return attester.open_grant(grant)


def main() -> None:
    """The enclave's entry point (the manifest's fixed argv): attest, key the data mount, train."""
    from simmim.config import load_config
    from simmim.train.loop import train

    try:
        attester = GramineAttester()
        attester.provision_mount_key(request_key(attester))
        train(load_config(ENCLAVE_CONFIG), ENCLAVE_OUT, progress=False)
    except SimMIMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
