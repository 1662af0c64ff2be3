"""Key-release policy files: valid ones load with a stable digest; policies that would accept any code, or that
misspell a field, are refused when loaded with the field named; evaluation lists every failed rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from simmim.tee import NITRO, SEV_SNP, Claims, Policy, PolicyError

PCR = "ab" * 48
POLICY_TOML = f"""
version = 1
allow = ["aws-nitro", "amd-sev-snp"]
debug = "forbid"
nonce_ttl_seconds = 120

[aws-nitro]
pcr0 = ["{PCR.upper()}"]
pcr2 = ["{"cd" * 48}", "{"ef" * 48}"]

[amd-sev-snp]
measurement = ["{"12" * 48}"]
min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}
"""
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _claims(**fields) -> Claims:
    base = {"tee": SEV_SNP, "measurements": {"measurement": "12" * 48}, "debug": False,
            "tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}, "report_data": bytes(64),
            "not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=1), "verified_at": NOW}
    return Claims(**{**base, **fields})


def test_a_policy_file_loads(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_TOML)
    policy = Policy.load(path)
    assert sorted(policy.rules) == [SEV_SNP, NITRO]
    assert policy.rules[NITRO].measurements["pcr0"] == {PCR}  # hex is normalised to lower case
    assert policy.rules[SEV_SNP].min_tcb == {"bootloader": 3, "snp": 8, "microcode": 115}
    assert policy.nonce_ttl_seconds == 120 and not policy.debug_allowed
    assert policy.digest == Policy.load(path).digest
    path.write_text(POLICY_TOML.replace("120", "60"))
    assert Policy.load(path).digest != policy.digest


@pytest.mark.parametrize(("data", "message"), [
    ({"allow": [NITRO]}, r"aws-nitro is allowed but has no \[aws-nitro\] section"),
    ({"allow": [NITRO], NITRO: {}}, "needs at least one measurement allow-list"),
    ({"allow": [NITRO], NITRO: {"pcr0": ["abc"]}}, "is not 96 hex digits"),
    ({"allow": [NITRO], NITRO: {"pcr0": []}}, "must be a non-empty list"),
    ({"allow": [NITRO], NITRO: {"pcr0": [PCR], "measurement": [PCR]}}, "unknown field"),
    ({"allow": ["azure"], "azure": {}}, "unknown field"),
    ({"allow": []}, "allow must be a non-empty list"),
    ({"allow": [NITRO], NITRO: {"pcr0": [PCR]}, "debug": "yes"}, "debug must be"),
    ({"allow": [NITRO], NITRO: {"pcr0": [PCR]}, SEV_SNP: {"measurement": [PCR]}}, "is not in allow"),
    ({"allow": [SEV_SNP], SEV_SNP: {"measurement": [PCR], "min_tcb": {"fw": 1}}}, "min_tcb must map"),
    ({"allow": [NITRO], NITRO: {"pcr0": [PCR]}, "nonce_ttl_seconds": 0}, "must be a positive number"),
    ({"allow": [NITRO], NITRO: {"pcr0": [PCR]}, "version": 2}, "version must be 1"),
])
def test_unsafe_or_misspelt_policies_are_refused(data, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict(data)


def test_unreadable_and_invalid_files_are_clear_errors(tmp_path):
    with pytest.raises(PolicyError, match="cannot read the policy"):
        Policy.load(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("allow = [")
    with pytest.raises(PolicyError, match="is not valid TOML"):
        Policy.load(tmp_path / "bad.toml")


def test_evaluation_lists_every_failed_rule(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_TOML)
    policy = Policy.load(path)
    assert policy.evaluate(_claims(), NOW) == []
    bad = _claims(debug=True, measurements={"measurement": "34" * 48},
                  tcb={"bootloader": 2, "tee": 0, "snp": 8, "microcode": 115})
    assert policy.evaluate(bad, NOW) == [
        "amd-sev-snp evidence is from a debug-mode workload; the policy forbids debug",
        f"measurement {'34' * 48} is not in the policy's allow-list",
        "TCB bootloader level 2 is below the minimum 3",
    ]
    assert policy.evaluate(_claims(tee="intel-tdx"), NOW) == [
        "TEE type intel-tdx is not allowed (allowed: amd-sev-snp, aws-nitro)"]


def test_nitro_evidence_must_be_fresh():
    policy = Policy.from_dict({"allow": [NITRO], NITRO: {"pcr0": [PCR]}, "max_evidence_age_seconds": 60})
    claims = _claims(tee=NITRO, measurements={"pcr0": PCR}, tcb={}, issued_at=NOW)
    assert policy.evaluate(claims, NOW + timedelta(seconds=59)) == []
    assert policy.evaluate(claims, NOW + timedelta(seconds=120)) == [
        "the evidence is 120 s old; the policy accepts at most 60 s"]
