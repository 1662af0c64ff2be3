"""AWS Nitro Enclaves attestation documents, verified offline.

A document is a COSE_Sign1 structure (RFC 9052) in CBOR: ``[protected header, unprotected header, payload,
signature]``. The protected header must name ES384; the payload is a CBOR map with ``module_id``,
``digest`` (``SHA384``), ``timestamp`` (ms since the epoch), ``pcrs`` (index -> 32/48/64 bytes),
``certificate`` (the signing leaf, DER), ``cabundle`` (root first, then intermediates), and optional
``public_key``, ``user_data`` and ``nonce`` (at most 1024 bytes each, as in AWS's CDDL).

Checks, in order: structure; ``cabundle[0]`` is byte for byte the trusted root (by default AWS's, pinned by
fingerprint in `simmim.tee.roots`); leaf -> intermediates -> root at ``now``; the ES384 signature of the
COSE ``Sig_structure`` by the leaf's key. A debug-mode enclave reports all-zero PCRs, so ``debug`` is true
when PCR0, PCR1 and PCR2 are all zero.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from simmim.tee.claims import NITRO, AttestationError, Claims, fingerprint, load_certificate, utc, verify_chain
from simmim.tee.roots import AWS_NITRO_ROOT_PEM, AWS_NITRO_ROOT_SHA256

FORMAT = "nitro"
COSE_ALG_ES384 = -35
COSE_SIGN1_TAG = 18
MAX_FIELD_BYTES = 1024  # AWS's CDDL and real documents allow 1024 (its prose says 512)
PCR_LENGTHS = (32, 48, 64)
_REQUIRED = {"module_id": str, "digest": str, "timestamp": int, "pcrs": dict, "certificate": bytes, "cabundle": list}


def aws_nitro_root() -> x509.Certificate:
    """AWS's Nitro Enclaves root, checked against the fingerprint pinned in code."""
    root = x509.load_pem_x509_certificate(AWS_NITRO_ROOT_PEM)
    if fingerprint(root) != AWS_NITRO_ROOT_SHA256:
        raise AttestationError("nitro: the bundled AWS root does not match its pinned fingerprint; reinstall SimMIM")
    return root


def read_document(data: bytes) -> bytes:
    """The raw CBOR of a document given raw or as base64 text."""
    if data[:1] in (b"\x84", b"\xd2"):  # a 4-element array, or tag 18 around it
        return data  # never strip binary: its last bytes may well be whitespace values
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AttestationError("nitro: the document is neither CBOR nor base64 of CBOR") from None


def _fail(check: str) -> AttestationError:
    return AttestationError(f"nitro: {check}")


def _cose_parts(raw: bytes) -> tuple[bytes, bytes, bytes]:
    try:
        outer = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise _fail(f"the document is not valid CBOR ({exc})") from None
    if isinstance(outer, cbor2.CBORTag):
        if outer.tag != COSE_SIGN1_TAG:
            raise _fail(f"CBOR tag {outer.tag} is not COSE_Sign1 ({COSE_SIGN1_TAG})")
        outer = outer.value
    if not (isinstance(outer, list) and len(outer) == 4 and isinstance(outer[0], bytes)
            and isinstance(outer[2], bytes) and isinstance(outer[3], bytes)):
        raise _fail("the document is not a COSE_Sign1 array [protected, unprotected, payload, signature]")
    protected, _unprotected, payload, signature = outer
    try:
        header = cbor2.loads(protected) if protected else {}
    except (cbor2.CBORDecodeError, ValueError):
        raise _fail("the protected header is not valid CBOR") from None
    if not isinstance(header, dict) or header.get(1) != COSE_ALG_ES384:
        raise _fail(f"the protected header must name ES384 (alg {COSE_ALG_ES384}), got {header!r}")
    return protected, payload, signature


def _payload(payload: bytes) -> dict:
    try:
        doc = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise _fail(f"the payload is not valid CBOR ({exc})") from None
    if not isinstance(doc, dict):
        raise _fail("the payload is not a map")
    for name, kind in _REQUIRED.items():
        if not isinstance(doc.get(name), kind) or (kind in (str, list, dict, bytes) and not doc[name]):
            raise _fail(f"payload field {name!r} is missing or not a non-empty {kind.__name__}")
    if doc["digest"] != "SHA384":
        raise _fail(f"payload digest must be SHA384, got {doc['digest']!r}")
    for index, value in doc["pcrs"].items():
        if not (isinstance(index, int) and 0 <= index < 32 and isinstance(value, bytes)
                and len(value) in PCR_LENGTHS):
            raise _fail(f"PCR {index!r} is malformed")
    for name in ("public_key", "user_data", "nonce"):
        value = doc.get(name)
        if value is not None and not (isinstance(value, bytes) and len(value) <= MAX_FIELD_BYTES):
            raise _fail(f"payload field {name!r} must be at most {MAX_FIELD_BYTES} bytes")
    if not all(isinstance(item, bytes) and item for item in doc["cabundle"]):
        raise _fail("cabundle holds something that is not a certificate")
    return doc


class NitroVerifier:
    """Verifies Nitro attestation documents against one trusted root.

    Args:
        root: The trusted root. Default: AWS's, pinned by fingerprint. Tests give their own CA here; nothing
            else (no environment variable, no file) can change it.
    """

    tee_format = FORMAT

    def __init__(self, root: x509.Certificate | None = None) -> None:
        self.root = root if root is not None else aws_nitro_root()

    def verify(self, document: bytes, *, now: datetime) -> Claims:
        """Claims of a document (raw CBOR or base64) verified at ``now``.

        Raises:
            AttestationError: Naming the failed check.
        """
        now = utc(now)
        protected, payload, signature = _cose_parts(read_document(document))
        doc = _payload(payload)
        bundle = doc["cabundle"]
        if bundle[0] != self.root.public_bytes(Encoding.DER):
            raise _fail(f"cabundle[0] is not the trusted root (expected SHA-256 {fingerprint(self.root)})")
        leaf = load_certificate(doc["certificate"], "signing certificate", FORMAT)
        intermediates = [load_certificate(der, f"cabundle[{i}]", FORMAT) for i, der in enumerate(bundle) if i > 0]
        not_before, not_after = verify_chain([leaf, *reversed(intermediates)], self.root, now, FORMAT)
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise _fail("the signing certificate's key is not ECDSA P-384")
        if len(signature) != 96:
            raise _fail(f"an ES384 signature is 96 bytes, got {len(signature)}")
        to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
        der_signature = encode_dss_signature(int.from_bytes(signature[:48], "big"),
                                             int.from_bytes(signature[48:], "big"))
        try:
            key.verify(der_signature, to_be_signed, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise _fail("the COSE signature does not verify: the document was altered or not signed by "
                        "its certificate") from None
        pcrs = {f"pcr{index}": value.hex() for index, value in sorted(doc["pcrs"].items())}
        debug = all(not any(doc["pcrs"].get(index, b"")) for index in (0, 1, 2))
        return Claims(tee=NITRO, measurements=pcrs, debug=debug, tcb={}, report_data=doc.get("user_data"),
                      nonce=doc.get("nonce"), public_key=doc.get("public_key"), not_before=not_before,
                      not_after=not_after, verified_at=now,
                      issued_at=datetime.fromtimestamp(doc["timestamp"] / 1000, UTC),
                      details={"module_id": doc["module_id"], "root_sha256": fingerprint(self.root)})





