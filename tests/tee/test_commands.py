"""`simmim tee` commands through typer's runner: evidence of each format verifies (human and JSON output),
bad evidence ends in one of our errors naming the failed check (the `simmim` entry point prints it as one
line), and `policy check` validates a policy and evaluates it on evidence."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from simmim.errors import SimMIMError
from simmim.tee import AttestationError, PolicyError
from simmim.tee.commands import app

runner = CliRunner()
NITRO_DOC = "nitro/nitro_attestation.b64"
NITRO_TIME = "2024-09-07T14:37:39Z"


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_verify_nitro(vectors):
    result = _invoke("verify", vectors / NITRO_DOC, "--format", "nitro", "--now", NITRO_TIME)
    assert result.exit_code == 0, result.output
    assert "verified: aws-nitro evidence" in result.output
    assert "debug: no" in result.output
    assert "pcr0: e72a46ca80a260fb" in result.output
    assert "(1024 bytes)" in result.output  # long fields are abbreviated


def test_verify_snp_as_json(vectors):
    folder = vectors / "sev-snp"
    result = _invoke("verify", folder / "attestation.bin", "--format", "snp", "--vcek", folder / "vcek.testcer",
                     "--now", "2022-09-24T01:00Z", "--json")
    assert result.exit_code == 0, result.output
    claims = json.loads(result.output)
    assert (claims["tee"], claims["debug"]) == ("amd-sev-snp", True)
    assert claims["tcb"] == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}


def test_verify_dcap_finds_the_collateral_beside_the_quote(vectors):
    result = _invoke("verify", vectors / "dcap" / "tdx_quote", "--format", "dcap", "--now", "1750329207")
    assert result.exit_code == 0, result.output
    assert "verified: intel-tdx evidence" in result.output and '"status": "UpToDate"' in result.output


def test_tampered_evidence_is_one_clear_error(vectors, tmp_path, flip):
    document = tmp_path / "doc.bin"
    document.write_bytes(flip((vectors / "sev-snp" / "attestation.bin").read_bytes(), 0x90))
    result = _invoke("verify", document, "--format", "snp", "--vcek", vectors / "sev-snp" / "vcek.testcer",
                     "--now", "2022-09-24T01:00Z")
    assert isinstance(result.exception, SimMIMError)  # `simmim` prints these as one line, no traceback
    assert str(result.exception) == ("snp: the report signature does not verify with the VCEK: the report was "
                                     "altered or signed by another chip")


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "snp"], "needs the VCEK that signed it: give --vcek PATH"),
    (["--format", "nitro", "--now", "yesterday"], "bad time 'yesterday'"),
    (["--format", "nitro"], "is not valid at"),  # the current time is long after the document's certificates
    (["--format", "dcap"], "cannot read the collateral"),
])
def test_usage_problems_are_clear_errors(vectors, args, message):
    result = _invoke("verify", vectors / NITRO_DOC, *args)
    assert isinstance(result.exception, AttestationError), result.output
    assert message in str(result.exception)


def test_a_missing_file_is_a_clear_error(tmp_path):
    result = _invoke("verify", tmp_path / "absent", "--format", "nitro")
    assert isinstance(result.exception, AttestationError)
    assert "cannot read the evidence" in str(result.exception)


def _policy(tmp_path, body: str):
    path = tmp_path / "policy.toml"
    path.write_text(body)
    return path


def test_policy_check_validates_a_policy(tmp_path):
    path = _policy(tmp_path, f'allow = ["amd-sev-snp"]\n[amd-sev-snp]\nmeasurement = ["{"ab" * 48}"]\n')
    result = _invoke("policy", "check", path)
    assert result.exit_code == 0, result.output
    assert "is valid: allows amd-sev-snp; debug forbidden; digest" in result.output


def test_policy_check_refuses_an_unsafe_policy(tmp_path):
    result = _invoke("policy", "check", _policy(tmp_path, 'allow = ["amd-sev-snp"]\n[amd-sev-snp]\n'))
    assert isinstance(result.exception, PolicyError)
    assert "needs at least one measurement allow-list" in str(result.exception)


def test_policy_check_rejects_the_debug_snp_sample(vectors, tmp_path):
    measurement = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
    path = _policy(tmp_path, f'allow = ["amd-sev-snp"]\n[amd-sev-snp]\nmeasurement = ["{measurement}"]\n')
    folder = vectors / "sev-snp"
    result = _invoke("policy", "check", path, "--evidence", folder / "attestation.bin", "--format", "snp",
                     "--vcek", folder / "vcek.testcer", "--now", "2022-09-24T01:00Z")
    assert isinstance(result.exception, AttestationError)
    assert "refuses this amd-sev-snp evidence: amd-sev-snp evidence is from a debug-mode workload" in str(
        result.exception)


def test_policy_check_accepts_matching_nitro_evidence(vectors, tmp_path):
    pcrs = json.loads(_invoke("verify", vectors / NITRO_DOC, "--format", "nitro", "--now", NITRO_TIME,
                              "--json").output)["measurements"]
    body = 'allow = ["aws-nitro"]\n[aws-nitro]\n' + "".join(f'pcr{i} = ["{pcrs[f"pcr{i}"]}"]\n' for i in range(3))
    result = _invoke("policy", "check", _policy(tmp_path, body), "--evidence", vectors / NITRO_DOC,
                     "--format", "nitro", "--now", NITRO_TIME)
    assert result.exit_code == 0, result.output
    assert "accepts this aws-nitro evidence" in result.output
    result = _invoke("policy", "check", _policy(tmp_path, body), "--evidence", vectors / NITRO_DOC)
    assert "--evidence needs --format" in str(result.exception)
