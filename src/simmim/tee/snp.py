"""AMD SEV-SNP attestation reports, verified offline (report layout: AMD SEV-SNP ABI specification,
``ATTESTATION_REPORT``, versions 2 and 3; VCEK extensions: AMD's "Versioned Chip Endorsement Key" spec).

Checks, in order: the VCEK chains ARK -> ASK -> VCEK at ``now`` (RSA-PSS-SHA384 signatures; the ARK must be
a trusted root, by default AMD's Milan ARK pinned by fingerprint); the report names ECDSA P-384 with
SHA-384 (algorithm 1) and its signature over bytes ``[0, 0x2A0)`` verifies with the VCEK's key (r and s
are stored little-endian, 72 bytes each); the report's ``reported_tcb`` equals the security patch levels
the VCEK was issued for and its ``chip_id`` equals the VCEK's hardware id (so the VCEK belongs to this chip
at this TCB). Guest policy bit 19 (DEBUG) becomes ``Claims.debug``. TCB versions are read in the Milan and
Genoa layout; Turin's layout differs and is not supported yet.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from simmim.tee.claims import SEV_SNP, AttestationError, Claims, fingerprint, load_certificate, utc, verify_chain
from simmim.tee.roots import AMD_MILAN_ARK_PEM, AMD_MILAN_ARK_SHA256, AMD_MILAN_ASK_PEM

FORMAT = "snp"
REPORT_BYTES = 0x4A0
SIGNED_BYTES = 0x2A0
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
POLICY_DEBUG_BIT = 19
SIGNATURE_COMPONENT_BYTES = 72
# TCB_VERSION (Milan and Genoa): one byte per component, by byte offset.
TCB_COMPONENTS = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
# VCEK extensions (OID under AMD's arc 1.3.6.1.4.1.3704) holding the patch level it was issued for.
_AMD_ARC = "1.3.6.1.4.1.3704.1."
VCEK_SPL_OIDS = {"bootloader": _AMD_ARC + "3.1", "tee": _AMD_ARC + "3.2", "snp": _AMD_ARC + "3.3",
                 "microcode": _AMD_ARC + "3.8"}
VCEK_HWID_OID = _AMD_ARC + "4"
VCEK_PRODUCT_OID = _AMD_ARC + "2"


@dataclass(frozen=True)
class SnpEvidence:
    """A report and the VCEK that signed it (DER or PEM); ``ask`` defaults to the ASK bundled for Milan."""

    report: bytes
    vcek: bytes
    ask: bytes | None = None


@dataclass(frozen=True)
class SnpReport:
    """The fields of a report this package uses."""

    version: int
    guest_svn: int
    policy: int
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    reported_tcb: bytes
    chip_id: bytes
    signature_r: bytes
    signature_s: bytes

    @classmethod
    def parse(cls, raw: bytes) -> SnpReport:
        if len(raw) != REPORT_BYTES:
            raise AttestationError(f"snp: a report is {REPORT_BYTES} bytes, got {len(raw)}")
        version, guest_svn, policy = struct.unpack_from("<IIQ", raw, 0x00)
        vmpl, signature_algo = struct.unpack_from("<II", raw, 0x30)
        if version < 2:
            raise AttestationError(f"snp: report version {version} is not supported (2 or later)")
        return cls(version=version, guest_svn=guest_svn, policy=policy, vmpl=vmpl, signature_algo=signature_algo,
                   current_tcb=raw[0x38:0x40], report_data=raw[0x50:0x90], measurement=raw[0x90:0xC0],
                   host_data=raw[0xC0:0xE0], id_key_digest=raw[0xE0:0x110], reported_tcb=raw[0x180:0x188],
                   chip_id=raw[0x1A0:0x1E0], signature_r=raw[0x2A0:0x2A0 + SIGNATURE_COMPONENT_BYTES],
                   signature_s=raw[0x2E8:0x2E8 + SIGNATURE_COMPONENT_BYTES])


def tcb_levels(tcb: bytes) -> dict[str, int]:
    """Security patch level per component of a TCB_VERSION."""
    return {name: tcb[offset] for name, offset in TCB_COMPONENTS.items()}


def amd_milan_roots() -> list[x509.Certificate]:
    """AMD's Milan ARK, checked against the fingerprint pinned in code."""
    ark = x509.load_pem_x509_certificate(AMD_MILAN_ARK_PEM)
    if fingerprint(ark) != AMD_MILAN_ARK_SHA256:
        raise AttestationError("snp: the bundled AMD ARK does not match its pinned fingerprint; reinstall SimMIM")
    return [ark]


def _der_integer(value: bytes, what: str) -> int:
    """A small DER INTEGER (tag 2, short length), as the VCEK's SPL extensions hold."""
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2:
        raise AttestationError(f"snp: VCEK extension {what} is not a DER integer")
    return int.from_bytes(value[2:], "big", signed=True)


def _extension_bytes(vcek: x509.Certificate, oid: str, what: str) -> bytes:
    try:
        value = vcek.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
    except x509.ExtensionNotFound:
        raise AttestationError(f"snp: the VCEK has no {what} extension ({oid})") from None
    return value.value  # UnrecognizedExtension: the extnValue octets


def vcek_levels(vcek: x509.Certificate) -> dict[str, int]:
    return {name: _der_integer(_extension_bytes(vcek, oid, f"{name} SPL"), f"{name} SPL")
            for name, oid in VCEK_SPL_OIDS.items()}


def vcek_hwid(vcek: x509.Certificate) -> bytes:
    value = _extension_bytes(vcek, VCEK_HWID_OID, "hwID")
    if len(value) == 66 and value[:2] == b"\x04\x40":  # some encoders wrap it in an OCTET STRING
        value = value[2:]
    return value


class SnpVerifier:
    """Verifies SEV-SNP reports against trusted ARKs.

    Args:
        trusted_roots: ARK certificates to trust. Default: AMD's Milan ARK, pinned by fingerprint. Add other
            generations' ARKs, or a test CA, here; nothing else (no environment, no file) changes them.
        default_ask: The ASK used when the evidence brings none. Default: AMD's Milan ASK (only with the
            default roots).
    """

    tee_format = FORMAT

    def __init__(self, trusted_roots: Sequence[x509.Certificate] | None = None,
                 default_ask: x509.Certificate | None = None) -> None:
        if trusted_roots is None:
            self.trusted_roots = amd_milan_roots()
            self.default_ask = default_ask or x509.load_pem_x509_certificate(AMD_MILAN_ASK_PEM)
        else:
            self.trusted_roots, self.default_ask = list(trusted_roots), default_ask
        if not self.trusted_roots:
            raise AttestationError("snp: no trusted ARK given")

    def _root_for(self, ask: x509.Certificate) -> x509.Certificate:
        for root in self.trusted_roots:
            if root.subject == ask.issuer:
                return root
        raise AttestationError(f"snp: the ASK {ask.subject.rfc4514_string()} is not issued by a trusted ARK "
                               f"(trusted: {', '.join(fingerprint(r)[:16] for r in self.trusted_roots)})")

    def verify(self, evidence: SnpEvidence, *, now: datetime) -> Claims:
        """Claims of a report verified at ``now``.

        Raises:
            AttestationError: Naming the failed check.
        """
        now = utc(now)
        report = SnpReport.parse(evidence.report)
        vcek = load_certificate(evidence.vcek, "VCEK", FORMAT)
        if evidence.ask is not None:
            ask = load_certificate(evidence.ask, "ASK", FORMAT)
        elif self.default_ask is not None:
            ask = self.default_ask
        else:
            raise AttestationError("snp: no ASK given and no default ASK configured")
        not_before, not_after = verify_chain([vcek, ask], self._root_for(ask), now, FORMAT)
        if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
            raise AttestationError(f"snp: signature algorithm {report.signature_algo} is not ECDSA P-384 SHA-384 "
                                   f"({SIGNATURE_ALGO_ECDSA_P384_SHA384})")
        key = vcek.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise AttestationError("snp: the VCEK's key is not ECDSA P-384")
        signature = encode_dss_signature(int.from_bytes(report.signature_r, "little"),
                                         int.from_bytes(report.signature_s, "little"))
        try:
            key.verify(signature, evidence.report[:SIGNED_BYTES], ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise AttestationError("snp: the report signature does not verify with the VCEK: the report was "
                                   "altered or signed by another chip") from None
        reported, certified = tcb_levels(report.reported_tcb), vcek_levels(vcek)
        if reported != certified:
            raise AttestationError(f"snp: the report's reported TCB {reported} is not the TCB the VCEK was "
                                   f"issued for {certified}")
        hwid = vcek_hwid(vcek)
        if any(report.chip_id) and report.chip_id != hwid:  # a zero chip id means the host masked it (MASK_CHIP_ID)
            raise AttestationError("snp: the report's chip id is not the VCEK's hardware id")
        return Claims(tee=SEV_SNP, measurements={"measurement": report.measurement.hex(),
                                                 "host_data": report.host_data.hex()},
                      debug=bool(report.policy >> POLICY_DEBUG_BIT & 1), tcb=reported,
                      report_data=report.report_data, not_before=not_before, not_after=not_after, verified_at=now,
                      details={"version": report.version, "guest_svn": report.guest_svn,
                               "policy": f"{report.policy:#x}", "vmpl": report.vmpl,
                               "chip_id": report.chip_id.hex(), "current_tcb": tcb_levels(report.current_tcb),
                               "ark_sha256": fingerprint(self._root_for(ask))})
