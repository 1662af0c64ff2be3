"""The personal-data vault: the only way data enters, leaves or is deleted.

Guarantees (each kept by one code path, tested in ``tests/vault``):

* Every operation is one database transaction together with its audit entry: a crash leaves
  either all of an ingest batch (records, subjects, data keys, log entry) or none of it.
* Every operation is authorised first (`simmim.vault.access.decide`, default deny) and the
  decision is logged, allowed or denied, before the operation runs.
* Payloads and ids are stored only encrypted (`envelope`, `keys`); plaintext exists in memory
  only, except in a subject's export archive, which is written where the caller asks.
* `release(purpose)` returns only records whose subject consents to that purpose now and is not
  deleted, and records the released set as a snapshot whose id is a fingerprint of its content.
* `delete_subject` destroys the subject's data keys first (crypto-shredding, one small
  transaction, independent of how much data the subject has), then removes the rows; a tombstone
  (the subject's keyed hash) refuses re-ingest until the subject consents again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from simmim.errors import VaultError
from simmim.vault import access, audit, envelope, keys
from simmim.vault.audit_trail import AuditTrail
from simmim.vault.consent import DEFAULT_PURPOSES, Consent, check_purpose_name
from simmim.vault.database import (
    head_revision,
    make_engine,
    parse_url,
    safe_url,
    schema_revision,
    transaction,
    upgrade_schema,
    utc_now,
)
from simmim.vault.ingest import Ingest, IngestReport
from simmim.vault.key_management import KeyManagement
from simmim.vault.lineage import ModelLineage
from simmim.vault.principals import PrincipalsAndTokens
from simmim.vault.release import Release, Releasing
from simmim.vault.schema import (
    AuditCheckpointRow,
    ConsentStateRow,
    MetaRow,
    ModelLineageRow,
    PrincipalRow,
    PurposeRow,
    RecordRow,
    SnapshotRow,
    SubjectRow,
    TokenRow,
    TombstoneRow,
)
from simmim.vault.subject_requests import DeletionReport, SubjectRequests
from simmim.vault.unlocked import AccessDeniedError

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_PURPOSES",
    "AccessDeniedError",
    "DeletionReport",
    "IngestReport",
    "Release",
    "Vault",
]

DEFAULT_MAX_PAYLOAD_BYTES = 64 << 20
DEFAULT_CHECKPOINT_EVERY = 100


@contextmanager
def _disposed_on_error(engine) -> Iterator[None]:
    """Closes the engine's connections if opening or creating the vault fails."""
    try:
        yield
    except BaseException:
        engine.dispose()
        raise


class Vault(Ingest, Consent, Releasing, ModelLineage, SubjectRequests, KeyManagement, PrincipalsAndTokens,
            AuditTrail):
    """An open vault: database, unlocked keys, the acting principal and the audit key.

    Open one with `Vault.create` (a new vault) or `Vault.open`; use it as a context manager, or call
    `close`, which signs a checkpoint over any entries not yet signed when an audit key is given.

    Its operations live in one module per concern, each a base of this class: `ingest`, `consent`,
    `release`, `lineage`, `subject_requests` (export, delete, tombstones, rectify),
    `key_management` (rotation, attested key release), `principals` (principals and tokens) and
    `audit_trail` (verify); `unlocked` holds the state and the authorised-operation machinery they
    share. This module opens, creates and closes vaults, and counts what they hold.
    """

    # ------------------------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, url: str | None, key_source: keys.KeySource, *, admin: str = "admin",
               audit_key: str | Path | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
               chunk_bytes: int = envelope.DEFAULT_CHUNK_BYTES, purposes: dict[str, str] | None = None,
               checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> Vault:
        """Creates the schema and a new vault in an empty database, with one admin principal.

        Raises:
            VaultError: If the database already holds a vault, or on a bad argument.
        """
        access.check_principal_name(admin)
        if max_payload_bytes < 1 or chunk_bytes < 1:
            raise VaultError("max_payload_bytes and chunk_bytes must be positive")
        loaded = audit.AuditKey.load(audit_key) if audit_key is not None else None
        engine = make_engine(parse_url(url))
        with _disposed_on_error(engine):
            return cls._create(engine, key_source, admin, loaded, max_payload_bytes, chunk_bytes,
                               purposes or DEFAULT_PURPOSES, checkpoint_every)

    @classmethod
    def _create(cls, engine, key_source: keys.KeySource, admin: str, audit_key: audit.AuditKey | None,
                max_payload_bytes: int, chunk_bytes: int, purposes: dict[str, str], checkpoint_every: int) -> Vault:
        upgrade_schema(engine)
        salt = keys.new_salt()
        kek = key_source.derive(key_source.describe(salt))
        vault_secret, vault_id, kek_id = keys.new_key(), str(uuid.uuid4()), str(uuid.uuid4())
        now = utc_now()
        with transaction(engine) as session:
            audit.lock_head(session)
            if session.get(MetaRow, 1) is not None:
                raise VaultError(f"{safe_url(engine.url)} already holds a vault; open it instead")
            meta = MetaRow(id=1, vault_id=vault_id, created_at=now, kek_id=kek_id,
                           kek_source=json.dumps(key_source.describe(salt)),
                           secret_wrapped=keys.wrap(kek, vault_secret, keys.secret_context(vault_id, kek_id)),
                           max_payload_bytes=max_payload_bytes, chunk_bytes=chunk_bytes)
            session.add(meta)
            for name, description in purposes.items():
                session.add(PurposeRow(name=check_purpose_name(name), description=description, created_at=now))
            session.add(PrincipalRow(name=admin, role="admin", created_at=now))
            audit.append(session, actor=admin, action="init", resource="vault",
                         details={"vault": vault_id, "kek": key_source.kind, "purposes": sorted(purposes)})
        vault = cls(engine, meta, kek, vault_secret, principal=admin, grant=None, audit_key=audit_key,
                    checkpoint_every=checkpoint_every)
        vault._maybe_checkpoint(force=True)
        return vault

    @classmethod
    def open(cls, url: str | None, key_source: keys.KeySource, *, principal: str | None = None,
             token: str | None = None, audit_key: str | Path | None = None,
             checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> Vault:
        """Opens and unlocks a vault, acting as ``principal`` or as the holder of ``token``.

        Raises:
            VaultError: If there is no vault at the URL, the key or passphrase is wrong (nothing is
                decrypted then), or the token is not valid.
        """
        loaded = audit.AuditKey.load(audit_key) if audit_key is not None else None
        engine = make_engine(parse_url(url))
        with _disposed_on_error(engine):
            return cls._open(engine, key_source, principal, token, loaded, checkpoint_every)

    @classmethod
    def _open(cls, engine, key_source: keys.KeySource, principal: str | None, token: str | None,
              audit_key: audit.AuditKey | None, checkpoint_every: int) -> Vault:
        try:
            revision = schema_revision(engine)
        except SQLAlchemyError as exc:
            raise VaultError(f"cannot open the vault at {safe_url(engine.url)}: {getattr(exc, 'orig', exc)}") from None
        if revision is None:
            raise VaultError(f"no vault at {safe_url(engine.url)}: create one with `simmim vault init`")
        if revision != head_revision():
            upgrade_schema(engine)
        with transaction(engine) as session:
            meta = session.get(MetaRow, 1)
        if meta is None:
            raise VaultError(f"no vault at {safe_url(engine.url)}: create one with `simmim vault init`")
        kek = key_source.derive(json.loads(meta.kek_source))
        secret = keys.unwrap(kek, meta.secret_wrapped, keys.secret_context(meta.vault_id, meta.kek_id))
        if secret is None:
            with transaction(engine) as session:
                audit.append(session, actor=principal or "(token)", action="unlock", resource="vault",
                             outcome=audit.DENIED, details={"reason": "wrong key or passphrase"})
            raise VaultError(f"wrong passphrase or key for the vault at {safe_url(engine.url)}; nothing was "
                             f"decrypted")
        vault = cls(engine, meta, kek, secret, principal=principal, grant=None, audit_key=audit_key,
                    checkpoint_every=checkpoint_every)
        if token is not None:
            vault._authenticate(token)
        return vault

    def close(self) -> None:
        """Signs a checkpoint over unsigned entries (if an audit signing key was given) and disconnects."""
        try:
            self._maybe_checkpoint(force=True)
        finally:
            self._engine.dispose()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- stats

    def stats(self) -> dict:
        """Counts only (no pseudonym, no id): subjects, records, consents per purpose, deletions, log."""
        with self._operation(access.STATS, "vault") as session:
            def count(model, *where) -> int:
                return session.scalar(select(func.count()).select_from(model).where(*where))

            consenting = dict(session.execute(
                select(ConsentStateRow.purpose, func.count()).where(ConsentStateRow.granted.is_(True))
                .group_by(ConsentStateRow.purpose)).all())
            head = session.get(audit.AuditHeadRow, 1)
            return {
                "vault": self.vault_id, "database": self.url,
                "subjects": count(SubjectRow), "records": count(RecordRow),
                "stored_bytes": session.scalar(select(func.coalesce(func.sum(func.length(RecordRow.payload)), 0))),
                "consenting_subjects": {p: consenting.get(p, 0) for p in
                                        session.scalars(select(PurposeRow.name).order_by(PurposeRow.name))},
                "deleted_subjects": count(TombstoneRow, TombstoneRow.lifted_at.is_(None)),
                "snapshots": count(SnapshotRow), "models": count(ModelLineageRow),
                "flagged_models": count(ModelLineageRow, ModelLineageRow.flagged_at.is_not(None)),
                "principals": count(PrincipalRow),
                "active_tokens": count(TokenRow, TokenRow.revoked_at.is_(None), TokenRow.expires_at > utc_now()),
                "audit_entries": head.seq if head else 0, "audit_checkpoints": count(AuditCheckpointRow),
                "unsigned_audit_entries": audit.unsigned_entries(session),
            }
