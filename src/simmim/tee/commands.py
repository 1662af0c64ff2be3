"""`simmim tee ...`: check attestation evidence and key-release policies from the command line, a thin shell
over `simmim.tee`. Errors are `SimMIMError`s (`AttestationError`, `PolicyError`), shown by the `simmim`
entry point as one line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from simmim.tee.claims import AttestationError, Claims, parse_time

app = typer.Typer(no_args_is_help=True,
                  help="Trusted execution: verify attestation evidence offline, check key-release policies.")
policy_app = typer.Typer(no_args_is_help=True, help="Key-release policies.")
app.add_typer(policy_app, name="policy")


class EvidenceFormat(StrEnum):
    nitro = "nitro"
    snp = "snp"
    dcap = "dcap"


FormatOption = Annotated[EvidenceFormat, typer.Option("--format", help="nitro (COSE document, raw or base64), "
                                                                       "snp (report; needs --vcek), dcap (quote)")]
NowOption = Annotated[str | None, typer.Option("--now", help="verify as of this time (ISO 8601 or unix seconds; "
                                                             "default: the current time)")]
VcekOption = Annotated[Path | None, typer.Option("--vcek", help="snp: the VCEK certificate (DER or PEM)")]
AskOption = Annotated[Path | None, typer.Option("--ask", help="snp: the ASK certificate (default: AMD Milan's)")]
CollateralOption = Annotated[Path | None, typer.Option("--collateral", help="dcap: collateral JSON (default: "
                                                                            "FILE_collateral.json)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the claims as one JSON object")]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AttestationError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def verify_file(path: Path, fmt: EvidenceFormat, now: datetime, *, vcek: Path | None = None, ask: Path | None = None,
                collateral: Path | None = None) -> Claims:
    """Reads evidence of format ``fmt`` from files and verifies it with the production roots."""
    data = _read(path, "evidence")
    if fmt is EvidenceFormat.nitro:
        from simmim.tee.nitro import NitroVerifier

        return NitroVerifier().verify(data, now=now)
    if fmt is EvidenceFormat.snp:
        from simmim.tee.snp import SnpEvidence, SnpVerifier

        if vcek is None:
            raise AttestationError("snp evidence needs the VCEK that signed it: give --vcek PATH")
        evidence = SnpEvidence(data, _read(vcek, "VCEK"), _read(ask, "ASK") if ask is not None else None)
        return SnpVerifier().verify(evidence, now=now)
    from simmim.tee.dcap import DcapEvidence, DcapVerifier

    collateral = collateral or path.with_name(path.name + "_collateral.json")
    text = _read(collateral, "collateral (give --collateral PATH)").decode("utf-8", "replace")
    return DcapVerifier().verify(DcapEvidence(data, text), now=now)


def _now(text: str | None) -> datetime:
    return parse_time(text) if text is not None else datetime.now(UTC)


def _show(claims: Claims, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(claims.summary(), sort_keys=True))
        return
    typer.echo(f"verified: {claims.tee} evidence, valid {claims.not_before.isoformat()} to "
               f"{claims.not_after.isoformat()}, checked at {claims.verified_at.isoformat()}")
    typer.echo(f"  debug: {'YES (memory inspectable)' if claims.debug else 'no'}")
    for name, value in claims.measurements.items():
        typer.echo(f"  {name}: {value}")
    if claims.tcb:
        typer.echo(f"  tcb: {json.dumps(dict(claims.tcb), sort_keys=True)}")
    for name, value in (("report data", claims.report_data), ("nonce", claims.nonce),
                        ("public key", claims.public_key)):
        if value is not None:
            shown = value.hex() if len(value) <= 64 else f"{value[:64].hex()}... ({len(value)} bytes)"
            typer.echo(f"  {name}: {shown}")


@app.command("verify")
def verify_command(file: Path, fmt: FormatOption, now: NowOption = None, vcek: VcekOption = None,
                   ask: AskOption = None, collateral: CollateralOption = None, as_json: JsonOption = False) -> None:
    """Verify attestation evidence offline (signatures and certificate chain to the pinned root) and print its
    claims. This checks the evidence, not whether a policy accepts it: see `simmim tee policy check`."""
    _show(verify_file(file, fmt, _now(now), vcek=vcek, ask=ask, collateral=collateral), as_json)


@policy_app.command("check")
def policy_check_command(
        policy_file: Annotated[Path, typer.Argument(help="the key-release policy (TOML)")],
        evidence: Annotated[Path | None, typer.Option("--evidence", help="also verify this evidence and "
                                                                         "evaluate the policy on it")] = None,
        fmt: Annotated[EvidenceFormat | None, typer.Option("--format", help="format of --evidence")] = None,
        now: NowOption = None, vcek: VcekOption = None, ask: AskOption = None,
        collateral: CollateralOption = None) -> None:
    """Validate a key-release policy file; with --evidence, say whether the policy would release the key to it
    (nonce and key binding aside, which only the broker's challenge can check)."""
    from simmim.tee.policy import Policy

    policy = Policy.load(policy_file)
    typer.echo(f"policy {policy_file} is valid: allows {', '.join(sorted(policy.rules))}; debug "
               f"{'allowed' if policy.debug_allowed else 'forbidden'}; digest {policy.digest}")
    if evidence is None:
        return
    if fmt is None:
        raise AttestationError("--evidence needs --format nitro|snp|dcap")
    moment = _now(now)
    claims = verify_file(evidence, fmt, moment, vcek=vcek, ask=ask, collateral=collateral)
    reasons = policy.evaluate(claims, moment)
    if reasons:
        raise AttestationError(f"policy {policy_file} refuses this {claims.tee} evidence: {'; '.join(reasons)}")
    typer.echo(f"policy {policy_file} accepts this {claims.tee} evidence")
