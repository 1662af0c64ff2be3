"""Fixtures of the TEE tests: the real public vectors (tests/tee/vectors, provenance in its README), their
fixed verification times, and test CAs that mint Nitro- and SEV-SNP-format evidence which the production
verifiers check through the same code, with the test roots given to the verifiers' constructors.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from simmim.tee import DcapEvidence, NitroVerifier, SnpEvidence, SnpVerifier
from simmim.tee.claims import parse_time
from simmim.tee.nitro import read_document
from simmim.tee.snp import VCEK_HWID_OID, VCEK_SPL_OIDS

VECTORS = Path(__file__).parent / "vectors"

# Each real sample and the time it verifies at (tests/tee/vectors/README.md).
NITRO_SAMPLES = {
    "nitro/nitro_attestation.b64": ("2024-09-07T14:37:39Z", False),
    "nitro/nitro_attestation_debug.b64": ("2024-09-07T14:38:06Z", True),
    "nitro-evervault/valid-attestation-doc-base64": ("2023-09-18T15:03:30.860Z", True),
    "nitro-evervault/beta-valid-attestation-doc-bytes": ("2022-10-13T08:58:02.136Z", False),
    "nitro-evervault/beta-debug-mode-attestation-doc-bytes": ("2022-10-12T13:50:06.081Z", True),
}
SNP_TIME = "2022-09-24T01:00Z"
DCAP_SAMPLES = {"tdx_quote": "1750329207", "sgx_quote": "1750330631"}

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # the e2e tests' clock
SNP_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SimMIM test CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, public_key, issuer: str, signing_key, *, ca: bool, not_before: datetime,
                 not_after: datetime, extensions=(), pss: bool = False) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    if pss:
        return builder.sign(signing_key, hashes.SHA384(), rsa_padding=padding.PSS(
            mgf=padding.MGF1(hashes.SHA384()), salt_length=48))
    return builder.sign(signing_key, hashes.SHA384())


class NitroTestCA:
    """Root -> intermediate -> short-lived leaf, all ECDSA P-384, signing COSE_Sign1 documents as AWS does."""

    def __init__(self) -> None:
        start, end = datetime(2020, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.root = _certificate("test nitro root", self.root_key.public_key(), "test nitro root", self.root_key,
                                 ca=True, not_before=start, not_after=end)
        self.intermediate_key = ec.generate_private_key(ec.SECP384R1())
        self.intermediate = _certificate("test nitro zonal", self.intermediate_key.public_key(), "test nitro root",
                                         self.root_key, ca=True, not_before=start, not_after=end)

    def verifier(self) -> NitroVerifier:
        return NitroVerifier(root=self.root)

    def document(self, *, now: datetime, pcrs: dict[int, bytes], nonce: bytes | None = None,
                 public_key: bytes | None = None, user_data: bytes | None = None) -> bytes:
        leaf_key = ec.generate_private_key(ec.SECP384R1())
        leaf = _certificate("test enclave", leaf_key.public_key(), "test nitro zonal", self.intermediate_key,
                            ca=False, not_before=now - timedelta(minutes=1), not_after=now + timedelta(hours=3))
        payload = cbor2.dumps({
            "module_id": "i-test-enc0", "digest": "SHA384", "timestamp": int(now.timestamp() * 1000),
            "pcrs": pcrs, "certificate": leaf.public_bytes(Encoding.DER),
            "cabundle": [self.root.public_bytes(Encoding.DER), self.intermediate.public_bytes(Encoding.DER)],
            "public_key": public_key, "user_data": user_data, "nonce": nonce})
        protected = cbor2.dumps({1: -35})
        to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
        r, s = decode_dss_signature(leaf_key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
        return cbor2.dumps([protected, {}, payload, r.to_bytes(48, "big") + s.to_bytes(48, "big")])


def snp_tcb_bytes(levels: dict[str, int]) -> bytes:
    return bytes([levels["bootloader"], levels["tee"], 0, 0, 0, 0, levels["snp"], levels["microcode"]])


class SnpTestCA:
    """ARK -> ASK (RSA, RSA-PSS-SHA384 signatures) -> a VCEK (ECDSA P-384) certified for `SNP_TCB` and one chip."""

    CHIP_ID = bytes(range(64))

    def __init__(self) -> None:
        start, end = datetime(2020, 1, 1, tzinfo=UTC), datetime(2045, 1, 1, tzinfo=UTC)
        self.ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ark = _certificate("ARK-Test", self.ark_key.public_key(), "ARK-Test", self.ark_key, ca=True,
                                not_before=start, not_after=end, pss=True)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ask = _certificate("SEV-Test", ask_key.public_key(), "ARK-Test", self.ark_key, ca=True,
                                not_before=start, not_after=end, pss=True)
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())
        extensions = [x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), bytes([2, 1, SNP_TCB[name]]))
                      for name, oid in VCEK_SPL_OIDS.items()]
        extensions.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(VCEK_HWID_OID), self.CHIP_ID))
        self.vcek = _certificate("SEV-VCEK", self.vcek_key.public_key(), "SEV-Test", ask_key, ca=False,
                                 not_before=start, not_after=end, extensions=extensions, pss=True)

    def verifier(self) -> SnpVerifier:
        return SnpVerifier(trusted_roots=[self.ark])

    def report(self, *, measurement: bytes, report_data: bytes, debug: bool = False,
               reported_tcb: dict[str, int] | None = None, chip_id: bytes | None = None) -> bytes:
        report = bytearray(0x4A0)
        policy = 0x30000 | (1 << 19 if debug else 0)
        struct.pack_into("<IIQ", report, 0x00, 2, 0, policy)
        struct.pack_into("<II", report, 0x30, 0, 1)
        tcb = snp_tcb_bytes(reported_tcb or SNP_TCB)
        report[0x38:0x40] = tcb
        report[0x50:0x90] = report_data
        report[0x90:0xC0] = measurement
        report[0x180:0x188] = tcb
        report[0x1A0:0x1E0] = chip_id or self.CHIP_ID
        r, s = decode_dss_signature(self.vcek_key.sign(bytes(report[:0x2A0]), ec.ECDSA(hashes.SHA384())))
        report[0x2A0:0x2A0 + 72] = r.to_bytes(72, "little")
        report[0x2E8:0x2E8 + 72] = s.to_bytes(72, "little")
        return bytes(report)

    def evidence(self, **report_fields) -> SnpEvidence:
        return SnpEvidence(self.report(**report_fields), self.vcek.public_bytes(Encoding.DER),
                           self.ask.public_bytes(Encoding.PEM))


@pytest.fixture(scope="session")
def nitro_ca() -> NitroTestCA:
    return NitroTestCA()


@pytest.fixture(scope="session")
def rogue_nitro_ca() -> NitroTestCA:
    """A second, untrusted CA minting well-formed Nitro documents."""
    return NitroTestCA()


@pytest.fixture(scope="session")
def snp_ca() -> SnpTestCA:
    return SnpTestCA()


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 1 << bit
    return bytes(changed)


@pytest.fixture
def flip():
    """`flip(data, offset, bit=0)`: a copy of `data` with one bit changed."""
    return flip_bit


def pytest_generate_tests(metafunc) -> None:
    """``nitro_sample`` and ``dcap_sample`` run a test once per real sample."""
    if "nitro_sample" in metafunc.fixturenames:
        metafunc.parametrize("nitro_sample", sorted(NITRO_SAMPLES), indirect=True)
    if "dcap_sample" in metafunc.fixturenames:
        metafunc.parametrize("dcap_sample", sorted(DCAP_SAMPLES), indirect=True)


@pytest.fixture
def vectors() -> Path:
    return VECTORS


@pytest.fixture
def nitro_sample(request) -> tuple[bytes, datetime, bool]:
    """(document as stored, the time it verifies at, whether it is a debug-mode document)."""
    when, debug = NITRO_SAMPLES[request.param]
    return (VECTORS / request.param).read_bytes(), parse_time(when), debug


@pytest.fixture
def nitro_doc() -> tuple[bytes, datetime]:
    """The production (non-debug) Nitro document, raw CBOR, and its time."""
    raw = read_document((VECTORS / "nitro/nitro_attestation.b64").read_bytes())
    return raw, parse_time(NITRO_SAMPLES["nitro/nitro_attestation.b64"][0])


@pytest.fixture
def snp_sample() -> tuple[SnpEvidence, datetime]:
    folder = VECTORS / "sev-snp"
    evidence = SnpEvidence((folder / "attestation.bin").read_bytes(), (folder / "vcek.testcer").read_bytes())
    return evidence, parse_time(SNP_TIME)


@pytest.fixture
def dcap_sample(request) -> tuple[str, DcapEvidence, datetime]:
    folder = VECTORS / "dcap"
    evidence = DcapEvidence((folder / request.param).read_bytes(),
                            (folder / f"{request.param}_collateral.json").read_text())
    return request.param, evidence, parse_time(DCAP_SAMPLES[request.param])


@pytest.fixture
def sgx_sample() -> tuple[DcapEvidence, datetime]:
    folder = VECTORS / "dcap"
    return (DcapEvidence((folder / "sgx_quote").read_bytes(), (folder / "sgx_quote_collateral.json").read_text()),
            parse_time(DCAP_SAMPLES["sgx_quote"]))


TEST_KEK = bytes(range(100, 132))


@pytest.fixture
def vault_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'vault.db'}"


@pytest.fixture
def vault(vault_url, tmp_path):
    """A vault unlocked by a key (`TEST_KEK`), acting as its admin, holding a few consented records and a
    ``trainer`` principal."""
    from simmim.data import synthetic
    from simmim.vault import KeySource, Vault, generate_signing_key

    opened = Vault.create(vault_url, KeySource.key(TEST_KEK), audit_key=generate_signing_key(tmp_path / "audit.key"))
    records = synthetic.generate(6, seed=1)
    opened.ingest(records)
    opened.grant_consent(sorted({r.subject_id for r in records}), "model-training", notice_version="v1")
    opened.add_principal("trainer", "trainer")
    yield opened
    opened.close()


@pytest.fixture
def kek() -> bytes:
    """The KEK of the `vault` fixture."""
    return TEST_KEK
