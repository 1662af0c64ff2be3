"""Intel SGX/TDX through dcap-qvl: the real quotes verify with their frozen collateral at their times, and a
changed quote, a time outside the collateral's validity, another root and a missing package are refused
with clear errors; the policy reads TCB status, advisories and collateral age."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from simmim.tee import SGX, TDX, AttestationError, DcapVerifier, Policy

HEADER_BYTES = 48  # the report body starts here in SGX (v3) and TDX (v4) quotes
EXPECTED = {"sgx_quote": (SGX, "ConfigurationAndSWHardeningNeeded", "mrenclave"),
            "tdx_quote": (TDX, "UpToDate", "mrtd")}


def test_every_sample_verifies_at_its_time(dcap_sample):
    name, evidence, now = dcap_sample
    claims = DcapVerifier().verify(evidence, now=now)
    tee, status, measurement = EXPECTED[name]
    assert (claims.tee, claims.tcb["status"], claims.debug) == (tee, status, False)
    assert len(claims.measurements[measurement]) in (64, 96)
    assert len(claims.report_data) == 64
    assert claims.not_before <= now <= claims.not_after
    assert claims.collateral_issued_at <= now


def test_the_sgx_sample_reads_its_fields(sgx_sample):
    evidence, now = sgx_sample
    claims = DcapVerifier().verify(evidence, now=now)
    assert claims.measurements["mrenclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert claims.report_data.startswith(b"Hello, world!")
    assert claims.tcb["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]


@pytest.mark.parametrize("body_offset", [0, 64, 320])
def test_a_one_bit_flip_in_the_signed_report_body_is_refused(dcap_sample, flip, body_offset):
    _name, evidence, now = dcap_sample
    changed = replace(evidence, quote=flip(evidence.quote, HEADER_BYTES + body_offset))
    with pytest.raises(AttestationError, match="dcap: the quote does not verify"):
        DcapVerifier().verify(changed, now=now)


@pytest.mark.parametrize("shift", [timedelta(days=-1), timedelta(days=40)])
def test_a_time_outside_the_collateral_validity_is_refused(dcap_sample, shift):
    _name, evidence, now = dcap_sample
    with pytest.raises(AttestationError, match="dcap: "):
        DcapVerifier().verify(evidence, now=now + shift)


def test_another_root_is_refused(dcap_sample, nitro_ca):
    _name, evidence, now = dcap_sample
    with pytest.raises(AttestationError, match="dcap: the quote does not verify"):
        DcapVerifier(root_ca_der=nitro_ca.root.public_bytes(Encoding.DER)).verify(evidence, now=now)


def test_bad_input_is_a_one_line_error(sgx_sample):
    evidence, now = sgx_sample
    with pytest.raises(AttestationError, match="not valid collateral JSON") as caught:
        DcapVerifier().verify(replace(evidence, collateral='{"tcb_info": 1}'), now=now)
    assert "\n" not in str(caught.value)
    with pytest.raises(AttestationError, match="dcap: the quote does not verify: .*decode quote") as caught:
        DcapVerifier().verify(replace(evidence, quote=evidence.quote[:500]), now=now)
    assert "\n" not in str(caught.value)


def test_without_dcap_qvl_the_error_says_what_to_install(sgx_sample, monkeypatch):
    evidence, now = sgx_sample
    monkeypatch.setitem(sys.modules, "dcap_qvl", None)  # as if it were not installed
    with pytest.raises(AttestationError, match=r"pip install 'simmim\[dcap\]'"):
        DcapVerifier().verify(evidence, now=now)


def _sgx_policy(**rules) -> Policy:
    return Policy.from_dict({"allow": [SGX], SGX: {
        "mrenclave": ["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"], **rules}})


def test_the_policy_reads_dcap_tcb_status_advisories_svn_and_collateral_age(sgx_sample):
    evidence, now = sgx_sample
    claims = DcapVerifier().verify(evidence, now=now)
    assert _sgx_policy().evaluate(claims, now) == [
        "TCB status ConfigurationAndSWHardeningNeeded is not accepted (accepted: UpToDate)"]
    accepting = {"tcb_status": ["UpToDate", "ConfigurationAndSWHardeningNeeded"]}
    assert _sgx_policy(**accepting).evaluate(claims, now) == []
    assert _sgx_policy(**accepting, deny_advisories=["INTEL-SA-00615"]).evaluate(claims, now) == [
        "the platform is affected by denied advisories INTEL-SA-00615"]
    assert _sgx_policy(**accepting, min_isv_svn=1).evaluate(claims, now) == ["ISV SVN 0 is below the minimum 1"]
    aged = _sgx_policy(**accepting, max_collateral_age_days=7).evaluate(claims, now + timedelta(days=10))
    assert aged == ["the TCB collateral is 10.0 days old; the policy accepts at most 7"]
