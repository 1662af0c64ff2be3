"""AMD SEV-SNP verifier: the real report verifies through AMD's pinned Milan ARK, its debug bit is seen and
refused by policy, and changed reports, other roots, times outside the chain's validity and TCB or chip
mismatches are refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from simmim.tee import SEV_SNP, AttestationError, Policy, SnpEvidence, SnpVerifier
from simmim.tee.roots import AMD_MILAN_ARK_SHA256, AMD_MILAN_ASK_PEM

MEASUREMENT = bytes.fromhex("b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
                            "6bdf8a9ece31a5a608eb0cf2e4872b01")


def test_the_sample_verifies_at_its_time(snp_sample):
    evidence, now = snp_sample
    claims = SnpVerifier().verify(evidence, now=now)
    assert claims.tee == SEV_SNP
    assert claims.measurements["measurement"] == MEASUREMENT.hex()
    assert claims.debug is True  # policy 0xb0000: bit 19 set
    assert claims.tcb == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert claims.report_data[:5] == bytes([1, 2, 3, 4, 5])
    assert claims.details["ark_sha256"] == AMD_MILAN_ARK_SHA256
    assert claims.not_before <= now <= claims.not_after


def test_a_non_debug_policy_rejects_the_sample(snp_sample):
    evidence, now = snp_sample
    claims = SnpVerifier().verify(evidence, now=now)
    policy = Policy.from_dict({"allow": [SEV_SNP], SEV_SNP: {"measurement": [MEASUREMENT.hex()]}})
    assert policy.evaluate(claims, now) == [
        "amd-sev-snp evidence is from a debug-mode workload; the policy forbids debug"]
    assert Policy.from_dict({"allow": [SEV_SNP], "debug": "allow",
                             SEV_SNP: {"measurement": [MEASUREMENT.hex()]}}).evaluate(claims, now) == []


@pytest.mark.parametrize("offset", [0x08, 0x50, 0x90, 0x180, 0x29F], ids=["policy", "report_data", "measurement",
                                                                          "reported_tcb", "last_signed_byte"])
def test_a_one_bit_flip_in_the_signed_region_is_refused(snp_sample, flip, offset):
    evidence, now = snp_sample
    changed = replace(evidence, report=flip(evidence.report, offset))
    with pytest.raises(AttestationError, match="report signature does not verify"):
        SnpVerifier().verify(changed, now=now)


def test_a_one_bit_flip_in_the_signature_is_refused(snp_sample, flip):
    evidence, now = snp_sample
    with pytest.raises(AttestationError, match="report signature does not verify"):
        SnpVerifier().verify(replace(evidence, report=flip(evidence.report, 0x2A0)), now=now)


@pytest.mark.parametrize("when", [datetime(2022, 9, 24, 0, 50, tzinfo=UTC), datetime(2029, 9, 25, tzinfo=UTC)])
def test_a_time_outside_the_vcek_validity_is_refused(snp_sample, when):
    evidence, _now = snp_sample
    with pytest.raises(AttestationError, match="SEV-VCEK.* is not valid at"):
        SnpVerifier().verify(evidence, now=when)


def test_another_root_is_refused(snp_sample, snp_ca):
    evidence, now = snp_sample
    with pytest.raises(AttestationError, match="not issued by a trusted ARK"):
        snp_ca.verifier().verify(replace(evidence, ask=AMD_MILAN_ASK_PEM), now=now)


def test_a_vcek_from_another_ask_is_refused(snp_sample, snp_ca):
    """The test CA's VCEK presented with AMD's ASK: the signature chain breaks at the VCEK."""
    evidence, now = snp_sample
    forged = snp_ca.evidence(measurement=MEASUREMENT, report_data=bytes(64))
    with pytest.raises(AttestationError, match="SEV-VCEK.* is not signed by"):
        SnpVerifier().verify(SnpEvidence(forged.report, forged.vcek), now=now)


def test_a_report_signed_by_another_vcek_is_refused(snp_sample, snp_ca):
    """AMD's report presented with the test CA's (valid) VCEK chain: the report's signature fails."""
    evidence, now = snp_sample
    swapped = replace(evidence, vcek=snp_ca.vcek.public_bytes(Encoding.DER), ask=snp_ca.ask.public_bytes(Encoding.PEM))
    with pytest.raises(AttestationError, match="report signature does not verify"):
        snp_ca.verifier().verify(swapped, now=now)


def test_test_ca_evidence_verifies_through_the_same_code(snp_ca):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    claims = snp_ca.verifier().verify(snp_ca.evidence(measurement=MEASUREMENT, report_data=b"\7" * 64), now=now)
    assert claims.debug is False and claims.report_data == b"\7" * 64
    assert claims.tcb == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


def test_a_reported_tcb_other_than_the_vceks_is_refused(snp_ca):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    evidence = snp_ca.evidence(measurement=MEASUREMENT, report_data=bytes(64),
                               reported_tcb={"bootloader": 3, "tee": 0, "snp": 9, "microcode": 115})
    with pytest.raises(AttestationError, match="reported TCB .* is not the TCB the VCEK was issued for"):
        snp_ca.verifier().verify(evidence, now=now)


def test_a_chip_id_other_than_the_vceks_is_refused(snp_ca):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    evidence = snp_ca.evidence(measurement=MEASUREMENT, report_data=bytes(64), chip_id=bytes([9] * 64))
    with pytest.raises(AttestationError, match="chip id is not the VCEK's hardware id"):
        snp_ca.verifier().verify(evidence, now=now)


def test_a_truncated_report_is_a_clear_error(snp_sample):
    evidence, now = snp_sample
    with pytest.raises(AttestationError, match="a report is 1184 bytes, got 1000"):
        SnpVerifier().verify(replace(evidence, report=evidence.report[:1000]), now=now)
