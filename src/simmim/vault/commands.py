"""`simmim vault ...`: the command-line front end of the vault, a thin shell over `simmim.vault.Vault`.

Every command takes the database (``--db`` or ``$SIMMIM_VAULT_URL``), the key (``--key-file``,
``$SIMMIM_VAULT_KEY`` or ``$SIMMIM_VAULT_PASSPHRASE``, else a hidden prompt), who acts (``--as`` /
``$SIMMIM_VAULT_PRINCIPAL`` or ``--token`` / ``$SIMMIM_VAULT_TOKEN``) and the audit key
(``--audit-key`` / ``$SIMMIM_VAULT_AUDIT_KEY``: the private key signs checkpoints, the public one
verifies). Errors are `VaultError`s, shown by the `simmim` entry point as one line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from simmim.vault import KeySource, Vault

vault_app = typer.Typer(no_args_is_help=True,
                        help="The personal-data vault: ingest, consent, subject requests, keys, access, audit.")
consent_app = typer.Typer(no_args_is_help=True, help="Record or withdraw consent for a purpose.")
principal_app = typer.Typer(no_args_is_help=True, help="Principals (who may act) and their roles.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens: scoped, expiring, revocable, shown once.")
tombstones_app = typer.Typer(no_args_is_help=True, help="Deletions by pseudonym: carry them to a restored backup.")
vault_app.add_typer(consent_app, name="consent")
vault_app.add_typer(principal_app, name="principal")
vault_app.add_typer(token_app, name="token")
vault_app.add_typer(tombstones_app, name="tombstones")

PRINCIPAL_ENV, TOKEN_ENV, AUDIT_KEY_ENV = "SIMMIM_VAULT_PRINCIPAL", "SIMMIM_VAULT_TOKEN", "SIMMIM_VAULT_AUDIT_KEY"
NEW_PASSPHRASE_ENV = "SIMMIM_VAULT_NEW_PASSPHRASE"

DbOption = Annotated[str | None, typer.Option("--db", help="vault database URL (default: $SIMMIM_VAULT_URL or "
                                                            "sqlite:///runs/vault.db)")]
KeyFileOption = Annotated[Path | None, typer.Option("--key-file", help="file holding the 32-byte vault key "
                                                                        "(default: $SIMMIM_VAULT_KEY or "
                                                                        "$SIMMIM_VAULT_PASSPHRASE, else a prompt)")]
AsOption = Annotated[str | None, typer.Option("--as", help="principal acting (default: $SIMMIM_VAULT_PRINCIPAL)")]
TokenOption = Annotated[str | None, typer.Option("--token", help="API token (default: $SIMMIM_VAULT_TOKEN)")]
AuditKeyOption = Annotated[Path | None, typer.Option("--audit-key", help="Ed25519 audit key file (default: "
                                                                          "$SIMMIM_VAULT_AUDIT_KEY)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def _key_source(key_file: Path | None, *, confirm: bool = False) -> KeySource:
    from simmim.vault.keys import KEY_ENV, PASSPHRASE_ENV, KeySource

    if key_file is not None:
        return KeySource.key_file(key_file)
    if os.environ.get(KEY_ENV) or os.environ.get(PASSPHRASE_ENV) or not sys.stdin.isatty():
        return KeySource.from_environment()
    return KeySource.passphrase(typer.prompt("vault passphrase", hide_input=True, confirmation_prompt=confirm))


def _audit_key(path: Path | None) -> Path | None:
    path = path or (Path(os.environ[AUDIT_KEY_ENV]) if os.environ.get(AUDIT_KEY_ENV) else None)
    return path


@contextmanager
def _opened(db: str | None, key_file: Path | None, principal: str | None, token: str | None,
            audit_key: Path | None) -> Iterator[Vault]:
    from simmim.vault import Vault

    token = token or os.environ.get(TOKEN_ENV)
    principal = principal or (None if token else os.environ.get(PRINCIPAL_ENV))
    vault = Vault.open(db, _key_source(key_file), principal=principal, token=token, audit_key=_audit_key(audit_key))
    try:
        yield vault
    finally:
        vault.close()


@vault_app.command("init")
def init_command(db: DbOption = None, key_file: KeyFileOption = None, audit_key: AuditKeyOption = None,
                 admin: Annotated[str, typer.Option("--admin", help="name of the first admin principal")] = "admin",
                 new_key: Annotated[bool, typer.Option("--new-key", help="write a new random key to --key-file")]
                 = False,
                 max_payload_mb: Annotated[float, typer.Option("--max-payload-mb", help="size cap per record")] = 64.0
                 ) -> None:
    """Create a vault: schema, key check, first admin; with --audit-key, a new signing key if the file is absent."""
    from simmim.errors import VaultError
    from simmim.vault import Vault, generate_signing_key, write_key_file

    if new_key:
        if key_file is None:
            raise VaultError("--new-key needs --key-file PATH to write the key to")
        write_key_file(key_file)
        typer.echo(f"new vault key written to {key_file}: keep it outside the database's backups")
    audit_path = _audit_key(audit_key)
    if audit_path is not None and not audit_path.exists():
        generate_signing_key(audit_path)
        typer.echo(f"new audit signing key written to {audit_path}: keep it outside the database")
    vault = Vault.create(db, _key_source(key_file, confirm=True), admin=admin, audit_key=audit_path,
                         max_payload_bytes=int(max_payload_mb * (1 << 20)))
    vault.close()
    typer.echo(f"vault {vault.vault_id} created at {vault.url}; act as {admin} with --as {admin} "
               f"(or ${PRINCIPAL_ENV}={admin})")


@vault_app.command("ingest")
def ingest_command(path: Path, db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                   token: TokenOption = None, audit_key: AuditKeyOption = None,
                   fmt: Annotated[str, typer.Option("--format", help="auto, csv, jsonl, coco, folder, webdataset")] =
                   "auto",
                   image_size: Annotated[int, typer.Option("--image-size", help="side images are resized to")] = 32,
                   skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip bad records, list them")] = False
                   ) -> None:
    """Encrypt and store a dataset (any format the loader reads), all records or none."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        report = vault.ingest_path(path, fmt=fmt, image_size=image_size, skip_bad=skip_bad)
    for bad in report.skipped:
        typer.echo(f"skipped {bad.source}: {bad.reason}")
    typer.echo(f"ingested {report.records} record(s); {report.new_subjects} new subject(s)")


PurposeOption = Annotated[str, typer.Option("--purpose", help="declared purpose, e.g. model-training")]


@consent_app.command("grant")
def consent_grant(subjects: list[str], purpose: PurposeOption,
                  notice_version: Annotated[str, typer.Option("--notice-version", help="notice shown")],
                  source: Annotated[str, typer.Option("--source", help="where consent was given")] = "cli",
                  db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                  token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Record consent of subjects for a purpose (a deleted subject consenting again may be ingested again)."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        created = vault.grant_consent(subjects, purpose, notice_version=notice_version, source=source)
    typer.echo(f"consent for {purpose} recorded for {len(subjects)} subject(s) ({created} new)")


@consent_app.command("withdraw")
def consent_withdraw(subjects: list[str], purpose: PurposeOption,
                     source: Annotated[str, typer.Option("--source", help="where it was withdrawn")] = "cli",
                     db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                     token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Withdraw consent: the subjects' records leave every later release for that purpose."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        vault.withdraw_consent(subjects, purpose, source=source)
    typer.echo(f"consent for {purpose} withdrawn for {len(subjects)} subject(s)")


@vault_app.command("export-subject")
def export_subject_command(subject_id: str, out: Annotated[Path, typer.Option("--out", help="zip file to write")],
                           db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                           token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Write everything stored about a subject, decrypted, as a zip archive (JSON + PNG)."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        path = vault.export_subject(subject_id, out)
    typer.echo(f"export written to {path}")


@vault_app.command("delete-subject")
def delete_subject_command(subject_id: str, db: DbOption = None, key_file: KeyFileOption = None,
                           principal: AsOption = None, token: TokenOption = None, audit_key: AuditKeyOption = None,
                           as_json: JsonOption = False) -> None:
    """Erase a subject: shred their key, delete their rows, tombstone them, list models trained on them."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        report = vault.delete_subject(subject_id)
    if as_json:
        typer.echo(json.dumps({"subject_ref": report.subject_ref, "records_deleted": report.records_deleted,
                               "snapshots": list(report.snapshots), "checkpoints": list(report.checkpoints)}))
        return
    typer.echo(f"subject shredded and deleted ({report.records_deleted} record(s)); "
               f"tombstone {report.subject_ref[:16]}")
    typer.echo(f"snapshots that included the subject: {', '.join(s[:16] for s in report.snapshots) or 'none'}")
    typer.echo(f"model checkpoints trained on them (flagged): {', '.join(report.checkpoints) or 'none'}")


@vault_app.command("rotate-keys")
def rotate_keys_command(new_key_file: Annotated[Path | None, typer.Option("--new-key-file", help=(
                            "the new key (written if absent); without it the new passphrase comes from "
                            f"${NEW_PASSPHRASE_ENV} or a prompt"))] = None,
                        db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                        token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Move the vault to a new key: data keys are rewrapped, records stay as they are."""
    from simmim.vault import KeySource, write_key_file

    if new_key_file is not None:
        if not new_key_file.exists():
            write_key_file(new_key_file)
        new_source = KeySource.key_file(new_key_file)
    elif os.environ.get(NEW_PASSPHRASE_ENV):
        new_source = KeySource.passphrase(os.environ[NEW_PASSPHRASE_ENV])
    else:
        new_source = KeySource.passphrase(typer.prompt("new vault passphrase", hide_input=True,
                                                       confirmation_prompt=True))
    with _opened(db, key_file, principal, token, audit_key) as vault:
        count = vault.rotate_keys(new_source)
    typer.echo(f"{count} data key(s) rewrapped under the new key; destroy the old key or passphrase so that "
               f"backups made before now cannot be opened")


@principal_app.command("add")
def principal_add(name: str, role: Annotated[str, typer.Option("--role", help="admin, steward, trainer, analyst, "
                                                                               "auditor")],
                  db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                  token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Add a principal with a role."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        vault.add_principal(name, role)
    typer.echo(f"principal {name} added as {role}")


@token_app.command("create")
def token_create(for_principal: Annotated[str, typer.Argument(help="principal the token acts as")],
                 scopes: Annotated[list[str], typer.Option("--scope", help="action or action:purpose, repeatable")],
                 days: Annotated[float, typer.Option("--days", help="lifetime in days")] = 30.0,
                 db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                 token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Create an API token; it is printed once and only its HMAC is stored."""
    from datetime import timedelta

    with _opened(db, key_file, principal, token, audit_key) as vault:
        new = vault.create_token(for_principal, scopes, expires_in=timedelta(days=days))
    typer.echo(new)
    typer.echo("(shown once: store it now)", err=True)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="the token's id (the part after smv_)")],
                 db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                 token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Revoke an API token."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        vault.revoke_token(token_id)
    typer.echo(f"token {token_id} revoked")


@tombstones_app.command("export")
def tombstones_export(out: Annotated[Path, typer.Option("--out", help="JSON file to write")],
                      db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                      token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Write every deletion (pseudonym and date, no id) to a JSON file."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        entries = vault.tombstones()
    out.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    typer.echo(f"{len(entries)} tombstone(s) written to {out}")


@tombstones_app.command("apply")
def tombstones_apply(path: Annotated[Path, typer.Argument(help="JSON file from `tombstones export`")],
                     db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                     token: TokenOption = None, audit_key: AuditKeyOption = None) -> None:
    """Re-apply deletions to this vault (a restored backup): shred every subject deleted since."""
    from simmim.errors import VaultError

    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot read tombstones from {path}: {exc}") from None
    if not isinstance(entries, list):
        raise VaultError(f"{path} does not hold a list of tombstones")
    with _opened(db, key_file, principal, token, audit_key) as vault:
        shredded = vault.apply_tombstones(entries)
    typer.echo(f"{len(entries)} tombstone(s) applied; {shredded} subject(s) present here were shredded")


@vault_app.command("verify")
def verify_command(db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                   token: TokenOption = None, audit_key: AuditKeyOption = None, as_json: JsonOption = False) -> None:
    """Check the audit log's hash chain and signed checkpoints, and consent and tombstone rows against it; exit 1
    if tampered."""
    from simmim.errors import VaultError

    path = _audit_key(audit_key)
    if path is None:
        raise VaultError("verify needs the audit key: --audit-key PATH or $SIMMIM_VAULT_AUDIT_KEY")
    with _opened(db, key_file, principal, token, None) as vault:
        report = vault.verify(path)
    if as_json:
        typer.echo(json.dumps({"ok": report.ok, "entries": report.entries, "checkpoints": report.checkpoints,
                               "consents_checked": report.consents_checked,
                               "tombstones_checked": report.tombstones_checked, "problems": report.problems}))
    else:
        for problem in report.problems:
            typer.echo(f"TAMPERED: {problem}")
        state = "intact" if report.ok else f"{len(report.problems)} problem(s)"
        typer.echo(f"audit log {state}: {report.entries} entries, {report.checkpoints} valid signed checkpoint(s), "
                   f"last at entry {report.last_checkpoint}; {report.consents_checked} consent row(s) and "
                   f"{report.tombstones_checked} tombstone(s) checked against it")
    if not report.ok:
        raise typer.Exit(1)


@vault_app.command("stats")
def stats_command(db: DbOption = None, key_file: KeyFileOption = None, principal: AsOption = None,
                  token: TokenOption = None, audit_key: AuditKeyOption = None, as_json: JsonOption = False) -> None:
    """Counts: subjects, records, consent per purpose, deletions, snapshots, models, audit log."""
    with _opened(db, key_file, principal, token, audit_key) as vault:
        stats = vault.stats()
    if as_json:
        typer.echo(json.dumps(stats))
        return
    for name, value in stats.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        typer.echo(f"{name.replace('_', ' ')}: {value}")
