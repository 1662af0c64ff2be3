"""What every verifier returns (`Claims`), the errors of this package, and the one certificate-chain check
that the Nitro and SEV-SNP verifiers share.

A verifier turns hardware evidence into `Claims` only if every signature and certificate checks out at the
given ``now``; anything else raises `AttestationError` naming the format and the check that failed. `Claims`
say what the hardware vouches for; whether that is acceptable is the policy's question (`simmim.tee.policy`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from simmim.errors import ConfigError, SimMIMError

NITRO, SEV_SNP, SGX, TDX = "aws-nitro", "amd-sev-snp", "intel-sgx", "intel-tdx"
TEE_TYPES = (NITRO, SEV_SNP, SGX, TDX)


class AttestationError(SimMIMError):
    """Evidence failed verification or could not be read; the message names the format and the failed check."""


class PolicyError(ConfigError):
    """A key-release policy file is invalid; the message names the file and the field."""


class KeyReleaseRefused(AttestationError):
    """The broker refused to release a key; the refusal and its reason are in the vault's audit log."""


@dataclass(frozen=True)
class Claims:
    """Verified content of one piece of evidence, the same shape for every TEE.

    Attributes:
        tee: One of `TEE_TYPES`.
        measurements: Lower-case hex by name: ``pcr0``..``pcrN`` (Nitro), ``measurement``, ``host_data``
            (SEV-SNP), ``mrenclave``, ``mrsigner`` (SGX), ``mrtd``, ``rtmr0``..``rtmr3`` (TDX).
        debug: True if the hardware says the workload's memory can be inspected (Nitro: zero PCRs; SEV-SNP:
            policy bit 19; SGX: ATTRIBUTES.DEBUG; TDX: TD_ATTRIBUTES.DEBUG).
        tcb: The trusted computing base level: SEV-SNP security patch levels by component; DCAP ``status``,
            ``advisory_ids`` and ``isv_svn``; empty for Nitro (AWS keeps its platform current).
        report_data: The 64 bytes the workload put in its report (Nitro: ``user_data``).
        nonce, public_key: Nitro's own fields (None elsewhere and when absent).
        not_before, not_after: Where ``now`` had to fall: the intersection of every certificate's and
            collateral's validity.
        verified_at: The ``now`` the evidence was verified at.
        issued_at: When the evidence was made (Nitro timestamp), or None when the format has no time.
        collateral_issued_at: When the TCB collateral was issued (DCAP), else None.
        details: Anything else worth showing (module id, chip id, versions); never used for decisions.
    """

    tee: str
    measurements: Mapping[str, str]
    debug: bool
    tcb: Mapping[str, object]
    report_data: bytes | None
    not_before: datetime
    not_after: datetime
    verified_at: datetime
    nonce: bytes | None = None
    public_key: bytes | None = None
    issued_at: datetime | None = None
    collateral_issued_at: datetime | None = None
    details: Mapping[str, object] = field(default_factory=dict)

    def summary(self) -> dict:
        """A JSON-ready view (bytes as hex, times as ISO 8601)."""
        def show(value):
            if isinstance(value, bytes):
                return value.hex()
            if isinstance(value, datetime):
                return value.isoformat()
            return value

        return {"tee": self.tee, "debug": self.debug, "measurements": dict(self.measurements),
                "tcb": dict(self.tcb), "report_data": show(self.report_data), "nonce": show(self.nonce),
                "public_key": show(self.public_key), "not_before": show(self.not_before),
                "not_after": show(self.not_after), "verified_at": show(self.verified_at),
                "issued_at": show(self.issued_at), "collateral_issued_at": show(self.collateral_issued_at),
                "details": {k: show(v) for k, v in self.details.items()}}


class Verifier(Protocol):
    """Checks one evidence format offline at an explicit time."""

    tee_format: str

    def verify(self, evidence, *, now: datetime) -> Claims: ...


def utc(moment: datetime, what: str = "now") -> datetime:
    """`moment` as an aware UTC datetime; a naive one is refused (its zone would be a guess)."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise AttestationError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2024-09-07T14:37:39Z``) or unix seconds, as aware UTC."""
    text = text.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise AttestationError(f"bad time {text!r}: give ISO 8601 (2024-09-07T14:37:39Z) or unix seconds") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_certificate(data: bytes, what: str, fmt: str) -> x509.Certificate:
    """A DER or PEM certificate. AMD's VCEKs have negative serial numbers, which `cryptography` warns about;
    the serial plays no part in verification, so the warning is silenced here only."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*serial number.*")
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise AttestationError(f"{fmt}: the {what} is not a certificate ({exc})") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def verify_chain(chain: Sequence[x509.Certificate], root: x509.Certificate, now: datetime, fmt: str,
                 ) -> tuple[datetime, datetime]:
    """Checks that ``chain`` (leaf first, each certificate issued by the next) ends at `root`, at ``now``.

    Every certificate must be within its validity period and signed by the next one (the last by `root`,
    which signs itself); every issuer must be a CA. The roots are pinned by the caller, so no name or
    revocation lookups happen here (nothing is reachable offline).

    Returns:
        The window ``(latest not-before, earliest not-after)`` over the chain and the root.
    Raises:
        AttestationError: Naming the first certificate that fails, by subject.
    """
    certs = [*chain, root]
    for cert, issuer in zip(certs, [*certs[1:], root]):
        name = cert.subject.rfc4514_string() or "(no subject)"
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if not start <= now <= end:
            raise AttestationError(f"{fmt}: certificate {name} is not valid at {now.isoformat()} (valid "
                                   f"{start.isoformat()} to {end.isoformat()})")
        try:
            constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise AttestationError(f"{fmt}: {issuer.subject.rfc4514_string()} issued {name} but is not a CA")
        try:
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as exc:
            reason = str(exc) or "signature does not verify"
            raise AttestationError(f"{fmt}: certificate {name} is not signed by "
                                   f"{issuer.subject.rfc4514_string()}: {reason}") from None
    return (max(c.not_valid_before_utc for c in certs), min(c.not_valid_after_utc for c in certs))
