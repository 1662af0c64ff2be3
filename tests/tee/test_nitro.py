"""AWS Nitro verifier: real AWS documents verify at their time against the pinned AWS root, and any change to
what is signed, any time outside the certificates' validity and any other root are refused."""

from __future__ import annotations

import base64
from datetime import timedelta

import cbor2
import pytest

from simmim.tee import NITRO, AttestationError, NitroVerifier, Policy
from simmim.tee.roots import AWS_NITRO_ROOT_SHA256


def test_every_sample_verifies_at_its_time(nitro_sample):
    document, now, debug = nitro_sample
    claims = NitroVerifier().verify(document, now=now)
    assert claims.tee == NITRO
    assert claims.debug is debug
    assert claims.not_before <= now <= claims.not_after
    assert abs((claims.issued_at - now).total_seconds()) < 1
    assert len(claims.measurements["pcr0"]) == 96
    assert claims.details["root_sha256"] == AWS_NITRO_ROOT_SHA256


def test_claims_carry_the_documents_fields(nitro_doc):
    raw, now = nitro_doc
    claims = NitroVerifier().verify(raw, now=now)
    payload = cbor2.loads(cbor2.loads(raw)[2])
    assert claims.measurements["pcr0"] == payload["pcrs"][0].hex()
    assert claims.nonce == payload["nonce"] and len(claims.nonce) == 1024  # AWS's CDDL limit, not its prose's 512
    assert claims.report_data == payload["user_data"]
    assert claims.public_key == payload["public_key"]
    assert claims.details["module_id"] == payload["module_id"]
    assert NitroVerifier().verify(base64.b64encode(raw), now=now) == claims  # base64 or raw


def test_a_one_bit_flip_in_a_pcr_breaks_the_signature(nitro_doc, flip):
    raw, now = nitro_doc
    pcr0 = cbor2.loads(cbor2.loads(raw)[2])["pcrs"][0]
    with pytest.raises(AttestationError, match="COSE signature does not verify"):
        NitroVerifier().verify(flip(raw, raw.index(pcr0) + 5), now=now)


def test_a_one_bit_flip_in_the_signature_is_refused(nitro_doc, flip):
    raw, now = nitro_doc
    with pytest.raises(AttestationError, match="COSE signature does not verify"):
        NitroVerifier().verify(flip(raw, len(raw) - 1), now=now)


def test_a_changed_algorithm_is_refused(nitro_doc):
    raw, now = nitro_doc
    parts = cbor2.loads(raw)
    parts[0] = cbor2.dumps({1: -7})  # ES256
    with pytest.raises(AttestationError, match="ES384"):
        NitroVerifier().verify(cbor2.dumps(parts), now=now)


@pytest.mark.parametrize("shift", [timedelta(hours=-1), timedelta(hours=4)])
def test_a_time_outside_the_certificates_validity_is_refused(nitro_doc, shift):
    raw, now = nitro_doc
    with pytest.raises(AttestationError, match="is not valid at"):
        NitroVerifier().verify(raw, now=now + shift)


def test_another_root_is_refused(nitro_doc, nitro_ca):
    raw, now = nitro_doc
    with pytest.raises(AttestationError, match=r"cabundle\[0\] is not the trusted root"):
        nitro_ca.verifier().verify(raw, now=now)


def test_a_document_from_another_ca_is_refused_by_the_aws_root(nitro_ca, nitro_doc):
    _raw, now = nitro_doc
    forged = nitro_ca.document(now=now, pcrs={0: b"\1" * 48, 1: b"\1" * 48, 2: b"\1" * 48})
    with pytest.raises(AttestationError, match="not the trusted root"):
        NitroVerifier().verify(forged, now=now)
    assert nitro_ca.verifier().verify(forged, now=now).measurements["pcr0"] == "01" * 48


def test_a_swapped_leaf_certificate_is_refused(nitro_ca, nitro_doc):
    """A document signed by a key certified by the test CA cannot borrow the AWS chain."""
    raw, now = nitro_doc
    real = cbor2.loads(cbor2.loads(raw)[2])
    forged = cbor2.loads(nitro_ca.document(now=now, pcrs={0: b"\1" * 48}))
    payload = cbor2.loads(forged[2])
    payload["cabundle"] = real["cabundle"]
    forged[2] = cbor2.dumps(payload)
    with pytest.raises(AttestationError, match="is not signed by"):
        NitroVerifier().verify(cbor2.dumps(forged), now=now)


def test_garbage_is_a_clear_error(nitro_doc):
    _raw, now = nitro_doc
    with pytest.raises(AttestationError, match="neither CBOR nor base64"):
        NitroVerifier().verify(b"not a document at all!", now=now)
    with pytest.raises(AttestationError, match="not a COSE_Sign1"):
        NitroVerifier().verify(cbor2.dumps([1, 2, 3, 4]), now=now)


def test_a_naive_time_is_refused(nitro_doc):
    raw, now = nitro_doc
    with pytest.raises(AttestationError, match="timezone-aware"):
        NitroVerifier().verify(raw, now=now.replace(tzinfo=None))


def test_a_non_debug_policy_rejects_the_debug_document(vectors, nitro_sample):
    document, now, debug = nitro_sample
    claims = NitroVerifier().verify(document, now=now)
    policy = Policy.from_dict({"allow": [NITRO], NITRO: {"pcr0": [claims.measurements["pcr0"]]}})
    reasons = policy.evaluate(claims, now)
    if debug:
        assert all(claims.measurements[f"pcr{i}"] == "00" * 48 for i in range(3))
        assert any("debug-mode" in reason for reason in reasons)
    else:
        assert reasons == []
