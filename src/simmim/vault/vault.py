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

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Select, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from simmim.data.formats import BadRecord
from simmim.data.records import Record
from simmim.errors import VaultError
from simmim.vault import access, audit, envelope, keys
from simmim.vault.database import (
    among,
    head_revision,
    make_engine,
    parse_url,
    safe_url,
    schema_revision,
    transaction,
    upgrade_schema,
)
from simmim.vault.export import write_archive
from simmim.vault.imports import read_for_ingest
from simmim.vault.payloads import check_id, decode_record, encode_record
from simmim.vault.schema import (
    AuditCheckpointRow,
    AuditEntryRow,
    ConsentEventRow,
    ConsentStateRow,
    MetaRow,
    ModelLineageRow,
    PrincipalRow,
    PurposeRow,
    RecordRow,
    SnapshotRow,
    SnapshotSubjectRow,
    SubjectKeyRow,
    SubjectRow,
    TokenRow,
    TombstoneRow,
)
from simmim.vault.subject_keys import SealingKeys, opening_keys, unwrap_data_key

DEFAULT_PURPOSES = {
    "model-training": "training SimMIM models on the data",
    "evaluation": "measuring a trained model's quality on held-out data",
    "analytics": "aggregate statistics about the data set",
}
DEFAULT_MAX_PAYLOAD_BYTES = 64 << 20
DEFAULT_CHECKPOINT_EVERY = 100
_PURPOSE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_IN_CLAUSE = 500  # ids per IN (...) query


class AccessDeniedError(VaultError):
    """The principal may not do this; the decision is in the audit log."""


@dataclass(frozen=True)
class IngestReport:
    records: int
    new_subjects: int
    skipped: tuple[BadRecord, ...] = ()


@dataclass(frozen=True)
class Release:
    """A released set: records decrypted in memory, and the snapshot that names them.

    Attributes:
        snapshot_id: SHA-256 fingerprint of (purpose, every record's pseudonym, revision and
            content hash); equal sets give equal ids. Checkpoints record it.
        subjects_hash: SHA-256 of the sorted subject pseudonyms in the set.
        excluded: Subjects left out, by reason: ``no_consent`` (never granted for the purpose),
            ``withdrawn``; ``deleted`` counts the vault's tombstones.
    """

    snapshot_id: str
    purpose: str
    records: list[Record]
    subjects_hash: str
    subject_count: int
    excluded: dict[str, int]


@dataclass(frozen=True)
class DeletionReport:
    """What a deletion did and which trained artefacts saw the subject."""

    subject_ref: str
    records_deleted: int
    snapshots: tuple[str, ...]
    checkpoints: tuple[str, ...]
    shred_seconds: float
    total_seconds: float


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; they were written in UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@contextmanager
def _disposed_on_error(engine) -> Iterator[None]:
    """Closes the engine's connections if opening or creating the vault fails."""
    try:
        yield
    except BaseException:
        engine.dispose()
        raise


def _chunks(items: Sequence, size: int = _IN_CLAUSE) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Vault:
    """An open vault: database, unlocked keys, the acting principal and the audit key.

    Open one with `Vault.create` (a new vault) or `Vault.open`; use it as a context manager, or call
    `close`, which signs a checkpoint over any entries not yet signed when an audit key is given.
    """

    def __init__(self, engine, meta: MetaRow, kek: bytes, vault_secret: bytes, *, principal: str | None,
                 grant: access.TokenGrant | None, audit_key: audit.AuditKey | None, checkpoint_every: int) -> None:
        self._engine = engine
        self.url = safe_url(engine.url)
        self.vault_id = meta.vault_id
        self.max_payload_bytes = meta.max_payload_bytes
        self.chunk_bytes = meta.chunk_bytes
        self._kek, self._kek_id = kek, meta.kek_id
        self._index_key = keys.index_key(vault_secret)
        self._vault_secret = vault_secret
        self.principal = principal
        self._grant = grant
        self.audit_key = audit_key
        self.checkpoint_every = checkpoint_every

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
        now = _now()
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
                session.add(PurposeRow(name=_check_purpose_name(name), description=description, created_at=now))
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

    # -------------------------------------------------------------------------------- pseudonyms

    def subject_ref(self, subject_id: str) -> str:
        """The subject's pseudonym (keyed hash); also its tombstone."""
        return hmac.digest(self._index_key, b"subject\x00" + subject_id.encode("utf-8"), "sha256").hex()

    def record_ref(self, record_id: str) -> str:
        return hmac.digest(self._index_key, b"record\x00" + record_id.encode("utf-8"), "sha256").hex()

    # ----------------------------------------------------------------------------- authorisation

    def _authenticate(self, token: str) -> None:
        token_id, secret = access.split_token(token)
        with transaction(self._engine) as session:
            row = session.get(TokenRow, token_id)
            reason = None
            if row is None or not access.digests_match(row.digest, access.token_digest(self._index_key, secret)):
                reason = "unknown token"
            elif row.revoked_at is not None:
                reason = f"token {token_id} was revoked"
            elif _aware(row.expires_at) <= _now():
                reason = f"token {token_id} expired"
            actor = row.principal if row is not None and reason is None else "(token)"
            audit.append(session, actor=actor, action="authenticate", resource=f"token:{token_id}",
                         outcome=audit.DENIED if reason else audit.ALLOWED, details={"reason": reason or "valid"})
        if reason:
            raise AccessDeniedError(f"token refused: {reason}")
        self.principal = row.principal
        self._grant = access.TokenGrant(token_id, row.principal, access.scopes_from_json(row.scopes),
                                        _aware(row.expires_at))

    def _decide(self, session: Session, action: str, purpose: str) -> access.Decision:
        row = session.get(PrincipalRow, self.principal) if self.principal else None
        return access.decide(row.role if row else None, action, purpose, self._grant)

    def _log_decision(self, action: str, resource: str, purpose: str, decision: access.Decision,
                      failure: BaseException | None = None) -> None:
        details = {"reason": decision.reason}
        if failure is not None:  # the class only: a message could name a person's record
            details.update(operation="failed", error=type(failure).__name__)
        with transaction(self._engine) as session:
            audit.append(session, actor=self.principal or "(none)", action=f"authorize:{action}", resource=resource,
                         purpose=purpose, outcome=audit.ALLOWED if decision.allowed else audit.DENIED,
                         details=details)

    def _denied(self, action: str, purpose: str, decision: access.Decision) -> AccessDeniedError:
        who = self.principal or "nobody (give a principal or a token)"
        return AccessDeniedError(f"access denied: {who} may not {action}{' for ' + purpose if purpose else ''}: "
                                 f"{decision.reason}")

    def authorize(self, action: str, resource: str = "", purpose: str = "") -> access.Decision:
        """Decides whether the acting principal may do ``action`` on ``resource`` for ``purpose``, and logs it.

        For callers outside the vault (an API layer); the vault's own operations decide inside their
        transaction (see `_operation`).

        Raises:
            AccessDeniedError: If denied (the denial is logged first).
        """
        with transaction(self._engine) as session:
            audit.lock_head(session)
            decision = self._decide(session, action, purpose)
            audit.append(session, actor=self.principal or "(none)", action=f"authorize:{action}", resource=resource,
                         purpose=purpose, outcome=audit.ALLOWED if decision.allowed else audit.DENIED,
                         details={"reason": decision.reason})
        if not decision.allowed:
            raise self._denied(action, purpose, decision)
        return decision

    @contextmanager
    def _operation(self, action: str, resource: str = "", purpose: str = "") -> Iterator[Session]:
        """One authorised operation: a write transaction that starts with the access decision's log entry.

        Allowed: the decision is logged in the operation's own transaction (one commit for both).
        Denied: the denial is logged in a transaction of its own and `AccessDeniedError` raised.
        Failed after being allowed: the transaction is rolled back, then the decision is logged
        again with the error's class, so the log shows every decision whatever happened next.
        """
        decision = None
        try:
            with transaction(self._engine) as session:
                audit.lock_head(session)  # serialises writers: the chain and every check-then-write below
                decision = self._decide(session, action, purpose)
                if not decision.allowed:
                    raise self._denied(action, purpose, decision)  # rolls back: nothing but the denial is kept
                audit.append(session, actor=self.principal, action=f"authorize:{action}", resource=resource,
                             purpose=purpose, outcome=audit.ALLOWED, details={"reason": decision.reason})
                yield session
        except Exception as failure:
            if decision is not None:
                self._log_decision(action, resource, purpose, decision, failure if decision.allowed else None)
            raise

    # --------------------------------------------------------------------------------- ingest

    def ingest(self, records: Iterable[Record], *, source: str = "api") -> IngestReport:
        """Stores records encrypted, all or none, creating subjects (and their data keys) as needed.

        Raises:
            VaultError: Naming the record, for a bad field, a payload over the size cap, a record id
                already in the vault or twice in the batch, or a deleted subject who has not consented
                again. Nothing is stored then.
        """
        with self._operation(access.INGEST, "records") as session:
            encoded = self._encode_batch(list(records))
            self._refuse_known_records(session, encoded)
            sealing = SealingKeys(session, self._kek, self._kek_id)
            subjects, new_subjects = self._subjects_for_ingest(session, encoded, sealing)
            now, rows = _now(), []
            for record, kind, payload, record_ref in encoded:
                subject_pk, subject_ref = subjects[record.subject_id]
                version, data_key = sealing.reserve(subject_pk, envelope.chunk_count(len(payload), self.chunk_bytes))
                sealed = envelope.seal_payload(data_key, payload, record_ref=record_ref, subject_ref=subject_ref,
                                               key_version=version, revision=1, chunk_bytes=self.chunk_bytes)
                rows.append({"ref": record_ref, "subject_pk": subject_pk, "kind": kind, "key_version": version,
                             "revision": 1, "plaintext_bytes": len(payload), "chunk_bytes": self.chunk_bytes,
                             "payload": sealed, "created_at": now, "updated_at": now})
            sealing.save()
            session.connection().execute(insert(RecordRow.__table__), rows)  # Core: no per-row ORM work
            audit.append(session, actor=self.principal, action="ingest", resource="records",
                         details={"source": _source_label(source), "records": len(encoded),
                                  "new_subjects": new_subjects,
                                  "subjects": sorted(ref for _, ref in subjects.values())})
        self._maybe_checkpoint()
        return IngestReport(records=len(encoded), new_subjects=new_subjects)

    def ingest_path(self, path: str | Path, *, fmt: str = "auto", image_size: int = 32, max_caption_words: int = 20,
                    skip_bad: bool = False) -> IngestReport:
        """Reads a dataset in any format the loader supports (confined to its folder) and ingests it.

        The principal is authorised before any file is read (and again by `ingest`).
        """
        self.authorize(access.INGEST, f"records:{_source_label('file:' + Path(path).name)}")
        result = read_for_ingest(path, fmt=fmt, image_size=image_size, max_caption_words=max_caption_words,
                                 skip_bad=skip_bad)
        report = self.ingest(result.records, source=f"file:{Path(path).name}")
        return IngestReport(report.records, report.new_subjects, tuple(result.skipped))

    def _encode_batch(self, records: list[Record]) -> list[tuple[Record, str, bytes, str]]:
        if not records:
            raise VaultError("nothing to ingest: the batch is empty")
        seen: set[str] = set()
        encoded = []
        for record in records:
            kind, payload = encode_record(record, max_bytes=self.max_payload_bytes)
            if record.record_id in seen:
                raise VaultError(f"record {record.record_id!r}: record id appears more than once in the batch")
            seen.add(record.record_id)
            encoded.append((record, kind, payload, self.record_ref(record.record_id)))
        return encoded

    def _refuse_known_records(self, session: Session, encoded: list) -> None:
        by_ref = {ref: record for record, _, _, ref in encoded}
        for part in _chunks(list(by_ref)):
            taken = set(session.scalars(select(RecordRow.ref).where(among(session, RecordRow.ref, part))))
            if taken:
                first = next(by_ref[ref] for ref in part if ref in taken)  # the first in batch order
                raise VaultError(f"record {first.record_id!r}: record id is already in the vault ({len(taken)} of "
                                 f"this batch are); use rectify to replace it. Nothing of this batch was stored")

    def _subjects_for_ingest(self, session: Session, encoded: list,
                             sealing: SealingKeys) -> tuple[dict[str, tuple[int, str]], int]:
        """subject id -> (primary key, pseudonym) for a batch, new subjects created with their first key."""
        first_record = {}
        for record, *_ in encoded:
            first_record.setdefault(record.subject_id, record)
        refs = {subject_id: self.subject_ref(subject_id) for subject_id in first_record}
        known: dict[str, int] = {}
        tombstoned: set[str] = set()
        for part in _chunks(list(refs.values())):
            known.update({ref: pk for pk, ref in session.execute(select(SubjectRow.id, SubjectRow.ref)
                                                                 .where(among(session, SubjectRow.ref, part)))})
            tombstoned.update(session.scalars(select(TombstoneRow.ref).where(among(session, TombstoneRow.ref, part),
                                                                              TombstoneRow.lifted_at.is_(None))))
        for subject_id, ref in refs.items():
            if ref in tombstoned:
                raise VaultError(f"record {first_record[subject_id].record_id!r}: its subject was deleted and has not "
                                 f"consented again; refused (nothing of this batch was stored)")
        sealing.load({pk: ref for ref, pk in known.items()})
        new_refs = [ref for ref in refs.values() if ref not in known]
        for pk, ref in self._add_subjects(session, new_refs, sealing).items():
            known[ref] = pk
        return {subject_id: (known[ref], ref) for subject_id, ref in refs.items()}, len(new_refs)

    def _add_subjects(self, session: Session, refs: list[str], sealing: SealingKeys) -> dict[int, str]:
        """Inserts subjects and makes each a first data key (saved by ``sealing.save()``): pk -> pseudonym."""
        if not refs:
            return {}
        now = _now()
        created = session.execute(insert(SubjectRow).returning(SubjectRow.id, SubjectRow.ref,
                                                               sort_by_parameter_order=True),
                                  [{"ref": ref, "created_at": now} for ref in refs]).all()
        for pk, ref in created:
            sealing.create(pk, ref)
        return {pk: ref for pk, ref in created}

    # -------------------------------------------------------------------------------- consent

    def declare_purpose(self, name: str, description: str) -> None:
        """Declares a purpose subjects can consent to."""
        name = _check_purpose_name(name)
        with self._operation(access.CONSENT, f"purpose:{name}", name) as session:
            if session.get(PurposeRow, name) is not None:
                raise VaultError(f"purpose {name!r} is already declared")
            session.add(PurposeRow(name=name, description=description, created_at=_now()))
            audit.append(session, actor=self.principal, action="declare-purpose", resource=f"purpose:{name}",
                         purpose=name)

    def purposes(self) -> dict[str, str]:
        """Declared purposes and their descriptions."""
        with self._operation(access.STATS, "purposes") as session:
            return {row.name: row.description for row in session.scalars(select(PurposeRow).order_by(PurposeRow.name))}

    def grant_consent(self, subject_ids: str | Iterable[str], purpose: str, *, notice_version: str,
                      source: str = "api") -> int:
        """Records consent for a purpose. An unknown subject is registered; a deleted one is let back in.

        Returns:
            How many subjects were new to the vault (or came back after a deletion).
        """
        return self._set_consent(subject_ids, purpose, True, notice_version, source)

    def withdraw_consent(self, subject_ids: str | Iterable[str], purpose: str, *, notice_version: str = "",
                         source: str = "api") -> int:
        """Records a withdrawal; the subject's records leave every later release for that purpose.

        Raises:
            VaultError: If a subject is not in the vault.
        """
        return self._set_consent(subject_ids, purpose, False, notice_version, source)

    def _set_consent(self, subject_ids, purpose: str, granted: bool, notice_version: str, source: str) -> int:
        ids = [subject_ids] if isinstance(subject_ids, str) else list(subject_ids)
        for subject_id in ids:
            check_id(subject_id, "subject_id", "consent")
        if not ids:
            raise VaultError("no subject given")
        _check_label(notice_version, "notice_version", required=granted)
        _check_label(source, "source", required=True)
        now, created = _now(), 0
        with self._operation(access.CONSENT, "subjects", purpose) as session:
            if session.get(PurposeRow, purpose) is None:
                declared = ", ".join(session.scalars(select(PurposeRow.name).order_by(PurposeRow.name)))
                raise VaultError(f"purpose {purpose!r} is not declared; declared: {declared}")
            sealing = SealingKeys(session, self._kek, self._kek_id)
            refs = []
            for subject_id in dict.fromkeys(ids):
                ref = self.subject_ref(subject_id)
                subject_pk = session.scalar(select(SubjectRow.id).where(SubjectRow.ref == ref))
                tombstone = session.get(TombstoneRow, ref)
                active_tombstone = tombstone is not None and tombstone.lifted_at is None
                if subject_pk is None or active_tombstone:
                    if not granted:
                        state = "was deleted" if active_tombstone else "is not in the vault"
                        raise VaultError(f"subject {subject_id!r} {state}; nothing to withdraw")
                    if active_tombstone:
                        tombstone.lifted_at = now  # the subject consents again: they may come back
                        self._purge_subject(session, subject_pk)
                    subject_pk = next(iter(self._add_subjects(session, [ref], sealing)))
                    created += 1
                session.add(ConsentEventRow(subject_pk=subject_pk, purpose=purpose, granted=granted, at=now,
                                            notice_version=notice_version, source=source))
                state = session.get(ConsentStateRow, (subject_pk, purpose))
                if state is None:
                    session.add(ConsentStateRow(subject_pk=subject_pk, purpose=purpose, granted=granted,
                                                updated_at=now))
                else:
                    state.granted, state.updated_at = granted, now
                refs.append(ref)
            sealing.save()
            audit.append(session, actor=self.principal, action="consent-grant" if granted else "consent-withdraw",
                         resource="subjects", purpose=purpose,
                         details={"subjects": refs, "notice_version": notice_version, "source": source,
                                  "new_subjects": created})
        self._maybe_checkpoint()
        return created

    def consents(self, subject_id: str) -> dict[str, bool]:
        """The subject's current consent per purpose (purposes never answered are absent)."""
        ref = self.subject_ref(check_id(subject_id, "subject_id", "consents"))
        with self._operation(access.CONSENT, f"subject:{ref}") as session:
            subject = self._subject(session, subject_id)
            rows = session.scalars(select(ConsentStateRow).where(ConsentStateRow.subject_pk == subject.id))
            return {row.purpose: row.granted for row in rows}

    # -------------------------------------------------------------------------------- release

    def release(self, purpose: str) -> Release:
        """The records usable for ``purpose`` now, decrypted in memory, recorded as a snapshot.

        Only subjects whose current consent for the purpose is a grant, and who are not deleted, are
        included. Records come sorted by pseudonym, so equal sets come in equal order.

        Raises:
            AccessDeniedError: If the principal may not release for this purpose.
            VaultError: If the purpose is not declared, or a ciphertext fails authentication (the
                message names the record's pseudonym).
        """
        with self._operation(access.RELEASE, "records", purpose) as session:
            if session.get(PurposeRow, purpose) is None:
                raise VaultError(f"purpose {purpose!r} is not declared")
            consenting = _stored_records().join(ConsentStateRow, ConsentStateRow.subject_pk == RecordRow.subject_pk)
            rows = session.connection().execute(consenting.where(ConsentStateRow.purpose == purpose,
                                                                 ConsentStateRow.granted.is_(True))
                                                .order_by(RecordRow.ref)).all()
            records, fingerprint, subject_refs = self._open_rows(session, rows)
            excluded = self._excluded(session, purpose)
            snapshot_id = hashlib.sha256(json.dumps([purpose, fingerprint]).encode()).hexdigest()
            subjects_hash = hashlib.sha256("\n".join(sorted(subject_refs)).encode()).hexdigest()
            if session.get(SnapshotRow, snapshot_id) is None:
                session.add(SnapshotRow(id=snapshot_id, purpose=purpose, created_at=_now(), record_count=len(records),
                                        subject_count=len(subject_refs), subjects_hash=subjects_hash))
                session.flush()
                if subject_refs:
                    included = [{"snapshot_id": snapshot_id, "subject_ref": ref} for ref in sorted(subject_refs)]
                    session.connection().execute(insert(SnapshotSubjectRow.__table__), included)
            audit.append(session, actor=self.principal, action="release", resource="records", purpose=purpose,
                         details={"snapshot": snapshot_id, "records": len(records), "subjects": len(subject_refs),
                                  "subjects_hash": subjects_hash, "excluded": excluded})
        self._maybe_checkpoint()
        return Release(snapshot_id=snapshot_id, purpose=purpose, records=records, subjects_hash=subjects_hash,
                       subject_count=len(subject_refs), excluded=excluded)

    def _open_rows(self, session: Session, rows) -> tuple[list[Record], list, set[str]]:
        """Decrypts records; returns them, their fingerprint entries and their subjects' pseudonyms."""
        data_keys = opening_keys(session, self._kek, {row.subject_pk: row.subject_ref for row in rows})
        records, fingerprint, subject_refs = [], [], set()
        for row in rows:
            data_key = data_keys.get((row.subject_pk, row.key_version))
            if data_key is None:
                raise VaultError(f"record {row.ref[:16]}: its data key is gone (the subject was shredded)")
            plaintext = envelope.open_payload(data_key, row.payload, record_ref=row.ref, subject_ref=row.subject_ref,
                                              key_version=row.key_version, revision=row.revision,
                                              chunk_bytes=row.chunk_bytes, plaintext_bytes=row.plaintext_bytes,
                                              what=f"record {row.ref[:16]} (pseudonym) of subject "
                                                   f"{row.subject_ref[:16]}")
            records.append(decode_record(plaintext, f"record {row.ref[:16]}"))
            fingerprint.append([row.ref, row.revision, hashlib.sha256(plaintext).hexdigest()])
            subject_refs.add(row.subject_ref)
        return records, fingerprint, subject_refs

    def _excluded(self, session: Session, purpose: str) -> dict[str, int]:
        answered = select(ConsentStateRow.subject_pk).where(ConsentStateRow.purpose == purpose)
        withdrawn = session.scalar(select(func.count()).select_from(ConsentStateRow).where(
            ConsentStateRow.purpose == purpose, ConsentStateRow.granted.is_(False)))
        never = session.scalar(select(func.count()).select_from(SubjectRow).where(SubjectRow.id.not_in(answered)))
        deleted = session.scalar(select(func.count()).select_from(TombstoneRow).where(TombstoneRow.lifted_at.is_(None)))
        return {"no_consent": never, "withdrawn": withdrawn, "deleted": deleted}

    def record_model(self, checkpoint_id: str, snapshot_id: str, description: str = "") -> None:
        """Records that a model checkpoint was trained on a snapshot (lineage, for deletions)."""
        check_id(checkpoint_id, "checkpoint_id", "model lineage")
        with self._operation(access.LINEAGE, f"snapshot:{snapshot_id}", "model-training") as session:
            if session.get(SnapshotRow, snapshot_id) is None:
                raise VaultError(f"snapshot {snapshot_id!r} is not in the vault; record the id `release` returned")
            if session.get(ModelLineageRow, checkpoint_id) is not None:
                raise VaultError(f"checkpoint {checkpoint_id!r} already has a lineage entry")
            session.add(ModelLineageRow(checkpoint_id=checkpoint_id, snapshot_id=snapshot_id, recorded_at=_now(),
                                        description=description, deleted_subjects=0))
            audit.append(session, actor=self.principal, action="record-model", resource=f"checkpoint:{checkpoint_id}",
                         purpose="model-training", details={"snapshot": snapshot_id})

    def models(self) -> list[dict]:
        """Every recorded checkpoint with its snapshot and how many of its subjects were deleted since."""
        with self._operation(access.STATS, "models") as session:
            rows = session.scalars(select(ModelLineageRow).order_by(ModelLineageRow.recorded_at))
            return [{"checkpoint": r.checkpoint_id, "snapshot": r.snapshot_id, "deleted_subjects": r.deleted_subjects,
                     "flagged_at": _aware(r.flagged_at), "description": r.description} for r in rows]

    # ------------------------------------------------------------------------ subject requests

    def _subject(self, session: Session, subject_id: str) -> SubjectRow:
        check_id(subject_id, "subject_id", "request")
        ref = self.subject_ref(subject_id)
        subject = session.scalars(select(SubjectRow).where(SubjectRow.ref == ref)).first()
        tombstone = session.get(TombstoneRow, ref)
        if tombstone is not None and tombstone.lifted_at is None:
            raise VaultError(f"subject {subject_id!r} was deleted on {_aware(tombstone.deleted_at):%Y-%m-%d}; "
                             f"nothing of theirs is left")
        if subject is None:
            raise VaultError(f"subject {subject_id!r} is not in the vault")
        return subject

    def _lineage(self, session: Session, ref: str) -> tuple[list[str], list[str]]:
        snapshots = list(session.scalars(select(SnapshotSubjectRow.snapshot_id)
                                         .where(SnapshotSubjectRow.subject_ref == ref)
                                         .order_by(SnapshotSubjectRow.snapshot_id)))
        checkpoints = list(session.scalars(select(ModelLineageRow.checkpoint_id)
                                           .where(ModelLineageRow.snapshot_id.in_(snapshots))
                                           .order_by(ModelLineageRow.checkpoint_id))) if snapshots else []
        return snapshots, checkpoints

    def export_subject(self, subject_id: str, out: str | Path) -> Path:
        """Writes everything stored about a subject, decrypted, as a zip archive (see `export`)."""
        ref = self.subject_ref(check_id(subject_id, "subject_id", "export"))
        with self._operation(access.EXPORT, f"subject:{ref}", access.DSR_PURPOSE) as session:
            subject = self._subject(session, subject_id)
            rows = session.execute(_stored_records(RecordRow.created_at, RecordRow.updated_at)
                                   .where(RecordRow.subject_pk == subject.id)
                                   .order_by(RecordRow.created_at, RecordRow.id)).all()
            records, _, _ = self._open_rows(session, rows)
            metas = [{"kind": row.kind, "revision": row.revision, "created_at": _aware(row.created_at).isoformat(),
                      "updated_at": _aware(row.updated_at).isoformat()} for row in rows]
            events = session.scalars(select(ConsentEventRow).where(ConsentEventRow.subject_pk == subject.id)
                                     .order_by(ConsentEventRow.id))
            history = [{"purpose": e.purpose, "granted": e.granted, "at": _aware(e.at).isoformat(),
                        "notice_version": e.notice_version, "source": e.source} for e in events]
            current = {row.purpose: row.granted for row in session.scalars(
                select(ConsentStateRow).where(ConsentStateRow.subject_pk == subject.id))}
            snapshots, checkpoints = self._lineage(session, ref)
            manifest = {"subject_id": subject_id, "pseudonym": ref, "vault": self.vault_id,
                        "exported_at": _now().isoformat(), "subject_since": _aware(subject.created_at).isoformat(),
                        "consent_current": current, "consent_history": history, "snapshots": snapshots,
                        "model_checkpoints": checkpoints}
            path = write_archive(out, manifest, list(zip(records, metas, strict=True)))
            audit.append(session, actor=self.principal, action="export-subject", resource=f"subject:{ref}",
                         purpose=access.DSR_PURPOSE, details={"records": len(records)})
        self._maybe_checkpoint()
        return path

    def delete_subject(self, subject_id: str) -> DeletionReport:
        """Erases a subject: shreds their data keys, tombstones them, flags models, then removes their rows.

        The shred (one small transaction) is the moment the data becomes unreadable; the row
        removal follows in a second transaction (a crash in between leaves only ciphertext
        without keys, removed by the next deletion or `purge_shredded`).

        Returns:
            The report, listing the snapshots and model checkpoints that included the subject.
        """
        ref = self.subject_ref(check_id(subject_id, "subject_id", "delete"))
        started = time.perf_counter()
        with self._operation(access.DELETE, f"subject:{ref}", access.DSR_PURPOSE) as session:
            subject = self._subject(session, subject_id)
            records, snapshots, checkpoints = self._shred(session, subject.id, ref, _now())
            audit.append(session, actor=self.principal, action="delete-subject", resource=f"subject:{ref}",
                         purpose=access.DSR_PURPOSE, details={"records": records, "snapshots": snapshots,
                                                              "checkpoints": checkpoints, "step": "shred"})
        shred_seconds = time.perf_counter() - started
        self.purge_shredded()
        self._maybe_checkpoint()
        return DeletionReport(subject_ref=ref, records_deleted=records, snapshots=tuple(snapshots),
                              checkpoints=tuple(checkpoints), shred_seconds=shred_seconds,
                              total_seconds=time.perf_counter() - started)

    def _shred(self, session: Session, subject_pk: int | None, ref: str, deleted_at: datetime,
               lifted_at: datetime | None = None) -> tuple[int, list[str], list[str]]:
        """Destroys a subject's data keys and consent state, writes their tombstone and flags the models
        trained on them; returns (records made unreadable, snapshots, checkpoints that included them)."""
        records = 0
        if subject_pk is not None:
            records = session.scalar(select(func.count()).select_from(RecordRow)
                                     .where(RecordRow.subject_pk == subject_pk))
            session.execute(delete(SubjectKeyRow).where(SubjectKeyRow.subject_pk == subject_pk))
            session.execute(delete(ConsentStateRow).where(ConsentStateRow.subject_pk == subject_pk))
        tombstone = session.get(TombstoneRow, ref)
        if tombstone is None:
            session.add(TombstoneRow(ref=ref, deleted_at=deleted_at, records_deleted=records, lifted_at=lifted_at))
        else:
            tombstone.deleted_at, tombstone.records_deleted, tombstone.lifted_at = deleted_at, records, lifted_at
        snapshots, checkpoints = self._lineage(session, ref)
        for row in session.scalars(select(ModelLineageRow).where(ModelLineageRow.checkpoint_id.in_(checkpoints))):
            row.deleted_subjects += 1
            row.flagged_at = row.flagged_at or deleted_at
        return records, snapshots, checkpoints

    def tombstones(self) -> list[dict]:
        """Every deletion this vault has done, by pseudonym and date (to re-apply to a restored backup)."""
        with self._operation(access.DELETE, "tombstones", access.DSR_PURPOSE) as session:
            rows = session.scalars(select(TombstoneRow).order_by(TombstoneRow.deleted_at, TombstoneRow.ref))
            return [{"ref": r.ref, "deleted_at": _aware(r.deleted_at).isoformat(),
                     "lifted_at": _aware(r.lifted_at).isoformat() if r.lifted_at else None} for r in rows]

    def apply_tombstones(self, tombstones: Iterable[dict]) -> int:
        """Re-applies deletions (from the live vault's `tombstones`) to this vault, e.g. a restored backup.

        Each subject whose data here predates the deletion is shredded and removed as by
        `delete_subject`; the tombstone is written either way, so a later ingest is refused too.

        Returns:
            How many subjects present here were shredded.
        """
        entries = [_tombstone_entry(item) for item in tombstones]
        with self._operation(access.DELETE, "tombstones", access.DSR_PURPOSE) as session:
            shredded = 0
            for ref, deleted_at, lifted_at in entries:
                subject = session.scalars(select(SubjectRow).where(SubjectRow.ref == ref)).first()
                current = session.get(TombstoneRow, ref)
                if current is not None and _aware(current.deleted_at) >= deleted_at:
                    continue  # this vault already knows this deletion (or a later one)
                stale = subject is not None and _aware(subject.created_at) <= deleted_at
                self._shred(session, subject.id if stale else None, ref, deleted_at, lifted_at)
                shredded += stale
            audit.append(session, actor=self.principal, action="apply-tombstones", resource="tombstones",
                         purpose=access.DSR_PURPOSE, details={"tombstones": len(entries), "shredded": shredded})
        self.purge_shredded()
        self._maybe_checkpoint()
        return shredded

    def purge_shredded(self) -> int:
        """Removes the rows of subjects whose keys were shredded (normally right after `delete_subject`)."""
        with transaction(self._engine) as session:
            audit.lock_head(session)
            has_key = select(SubjectKeyRow.subject_pk)
            shredded = list(session.scalars(select(SubjectRow).where(SubjectRow.id.not_in(has_key))))
            for subject in shredded:
                self._purge_subject(session, subject.id)
        if shredded:
            self._reclaim_key_space()
        return len(shredded)

    def _reclaim_key_space(self) -> None:
        """Lets the database drop the deleted key rows' bytes now rather than at some later maintenance.

        SQLite: the WAL still holds the pages with the wrapped keys until it is checkpointed and
        truncated (the main file's freed pages are already zeroed by ``secure_delete``).
        PostgreSQL: dead rows stay in the table's pages until VACUUM; the keys table is small.
        """
        raw = self._engine.raw_connection()
        try:
            if self._engine.url.get_backend_name() == "sqlite":
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                raw.driver_connection.autocommit = True  # VACUUM cannot run inside a transaction
                try:
                    raw.driver_connection.execute("VACUUM vault_subject_keys")
                finally:
                    raw.driver_connection.autocommit = False
        finally:
            raw.close()

    def _purge_subject(self, session: Session, subject_pk: int | None) -> None:
        if subject_pk is None:
            return
        for table in (RecordRow, ConsentEventRow, ConsentStateRow, SubjectKeyRow):
            session.execute(delete(table).where(table.subject_pk == subject_pk))
        session.execute(delete(SubjectRow).where(SubjectRow.id == subject_pk))

    def rectify(self, record: Record) -> int:
        """Replaces a stored record (same record id and subject) with corrected content.

        Returns:
            The record's new revision. The old ciphertext is gone; the audit log keeps the change.
        """
        kind, payload = encode_record(record, max_bytes=self.max_payload_bytes)
        ref, subject_ref = self.record_ref(record.record_id), self.subject_ref(record.subject_id)
        with self._operation(access.RECTIFY, f"record:{ref}", access.DSR_PURPOSE) as session:
            row = session.scalars(select(RecordRow).where(RecordRow.ref == ref)).first()
            if row is None:
                raise VaultError(f"record {record.record_id!r} is not in the vault; ingest it instead")
            subject = session.get(SubjectRow, row.subject_pk)
            if subject.ref != subject_ref:
                raise VaultError(f"record {record.record_id!r} belongs to another subject; a record cannot change "
                                 f"owner (delete it with its subject and ingest it again)")
            sealing = SealingKeys(session, self._kek, self._kek_id)
            sealing.load({subject.id: subject.ref})
            version, data_key = sealing.reserve(subject.id, envelope.chunk_count(len(payload), self.chunk_bytes))
            sealing.save()
            row.revision += 1
            row.kind, row.key_version, row.plaintext_bytes, row.chunk_bytes = kind, version, len(payload), \
                self.chunk_bytes
            row.payload = envelope.seal_payload(data_key, payload, record_ref=ref, subject_ref=subject.ref,
                                                key_version=version, revision=row.revision,
                                                chunk_bytes=self.chunk_bytes)
            row.updated_at = _now()
            audit.append(session, actor=self.principal, action="rectify", resource=f"record:{ref}",
                         purpose=access.DSR_PURPOSE, details={"subject": subject.ref, "revision": row.revision})
            revision = row.revision
        self._maybe_checkpoint()
        return revision

    # ------------------------------------------------------------------------------------- keys

    def rotate_keys(self, new_source: keys.KeySource) -> int:
        """Moves the vault to a new KEK: rewraps the vault secret and every data key; records are untouched.

        Returns:
            How many data keys were rewrapped. Afterwards only the new passphrase or key opens the vault.
        """
        salt = keys.new_salt()
        description = new_source.describe(salt)
        new_kek, new_kek_id = new_source.derive(description), str(uuid.uuid4())
        with self._operation(access.ROTATE_KEYS, "keys") as session:
            meta = session.get(MetaRow, 1)
            rewrapped = 0
            rows = session.execute(select(SubjectKeyRow, SubjectRow.ref)
                                   .join(SubjectRow, SubjectKeyRow.subject_pk == SubjectRow.id))
            for key_row, subject_ref in rows:
                data_key = unwrap_data_key(self._kek, key_row.wrapped, subject_ref, key_row.version, key_row.kek_id)
                key_row.wrapped = keys.wrap(new_kek, data_key,
                                            keys.data_key_context(subject_ref, key_row.version, new_kek_id))
                key_row.kek_id = new_kek_id
                rewrapped += 1
            meta.secret_wrapped = keys.wrap(new_kek, self._vault_secret, keys.secret_context(self.vault_id, new_kek_id))
            meta.kek_id, meta.kek_source = new_kek_id, json.dumps(description)
            audit.append(session, actor=self.principal, action="rotate-keys", resource="keys",
                         details={"data_keys": rewrapped, "kek": new_source.kind})
        self._kek, self._kek_id = new_kek, new_kek_id
        self._maybe_checkpoint()
        return rewrapped

    # ------------------------------------------------------------------------- principals, tokens

    def add_principal(self, name: str, role: str) -> None:
        name, role = access.check_principal_name(name), access.check_role(role)
        with self._operation(access.MANAGE_PRINCIPALS, f"principal:{name}") as session:
            if session.get(PrincipalRow, name) is not None:
                raise VaultError(f"principal {name!r} already exists")
            session.add(PrincipalRow(name=name, role=role, created_at=_now()))
            audit.append(session, actor=self.principal, action="principal-add", resource=f"principal:{name}",
                         details={"role": role})

    def principals(self) -> dict[str, str]:
        """Principal names and their roles."""
        with self._operation(access.MANAGE_PRINCIPALS, "principals") as session:
            return {row.name: row.role for row in session.scalars(select(PrincipalRow).order_by(PrincipalRow.name))}

    def create_token(self, principal: str, scopes: list[str], *, expires_in: timedelta = timedelta(days=30)) -> str:
        """Creates an API token for a principal; the returned string is shown once and never stored."""
        scopes = access.check_scopes(list(scopes))
        if expires_in <= timedelta(0):
            raise VaultError("a token's lifetime must be positive")
        token_id, secret, token = access.new_token()
        with self._operation(access.MANAGE_TOKENS, f"principal:{principal}") as session:
            if session.get(PrincipalRow, principal) is None:
                raise VaultError(f"principal {principal!r} does not exist; add it first")
            now = _now()
            session.add(TokenRow(id=token_id, principal=principal, digest=access.token_digest(self._index_key, secret),
                                 scopes=json.dumps(scopes), created_at=now, expires_at=now + expires_in))
            audit.append(session, actor=self.principal, action="token-create", resource=f"token:{token_id}",
                         details={"principal": principal, "scopes": scopes,
                                  "expires_at": (now + expires_in).isoformat()})
        return token

    def revoke_token(self, token_id: str) -> None:
        with self._operation(access.MANAGE_TOKENS, f"token:{token_id}") as session:
            row = session.get(TokenRow, token_id)
            if row is None:
                raise VaultError(f"token {token_id!r} does not exist")
            if row.revoked_at is None:
                row.revoked_at = _now()
            audit.append(session, actor=self.principal, action="token-revoke", resource=f"token:{token_id}",
                         details={"principal": row.principal})

    # ------------------------------------------------------------------------------------ audit

    def checkpoint(self) -> int | None:
        """Signs the current head of the audit log; returns the entry it covers, or None if already signed."""
        if self.audit_key is None:
            raise VaultError("no audit signing key given; pass --audit-key (or $SIMMIM_VAULT_AUDIT_KEY)")
        with transaction(self._engine) as session:
            row = audit.write_checkpoint(session, self.audit_key, self.vault_id)
            return row.seq if row is not None else None

    def _maybe_checkpoint(self, force: bool = False) -> None:
        if self.audit_key is None or self.audit_key.private is None:
            return
        with transaction(self._engine) as session:
            audit.lock_head(session)
            pending = audit.unsigned_entries(session)
            if pending > 0 and (force or pending >= self.checkpoint_every):
                audit.write_checkpoint(session, self.audit_key, self.vault_id)

    def verify(self, audit_key: audit.AuditKey | str | Path | None = None) -> audit.VerifyReport:
        """Checks the audit log's chain and signed checkpoints with the audit key (public or private)."""
        key = audit.AuditKey.load(audit_key) if isinstance(audit_key, (str, Path)) else (audit_key or self.audit_key)
        if key is None:
            raise VaultError("verify needs the audit public key: pass --audit-key")
        with self._operation(access.VERIFY, "audit-log") as session:
            return audit.verify_log(session, key, self.vault_id)

    def audit_entries(self, limit: int = 50) -> list[dict]:
        """The newest audit entries (pseudonyms only), newest last."""
        with self._operation(access.VERIFY, "audit-log") as session:
            rows = session.scalars(select(AuditEntryRow).order_by(AuditEntryRow.seq.desc()).limit(limit)).all()
            return [{"seq": r.seq, "at": r.at, "actor": r.actor, "action": r.action, "resource": r.resource,
                     "purpose": r.purpose, "outcome": r.outcome, "details": json.loads(r.details)}
                    for r in reversed(rows)]

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
                "active_tokens": count(TokenRow, TokenRow.revoked_at.is_(None), TokenRow.expires_at > _now()),
                "audit_entries": head.seq if head else 0, "audit_checkpoints": count(AuditCheckpointRow),
                "unsigned_audit_entries": audit.unsigned_entries(session),
            }

    # ------------------------------------------------------------- attested key release (simmim.tee)

    def record_event(self, action: str, resource: str = "", *, outcome: str = audit.DONE,
                     details: dict | None = None) -> None:
        """Appends one entry to the audit log as the acting principal, for components outside the vault
        whose decisions belong in its chain (the TEE key broker logs every refusal here).

        ``details`` must hold no personal data: pseudonyms, measurements, counts and reasons only.

        Raises:
            VaultError: If ``outcome`` is not one of the audit log's outcomes.
        """
        if outcome not in (audit.ALLOWED, audit.DENIED, audit.DONE, audit.FAILED):
            raise VaultError(f"audit outcome must be allowed, denied, done or failed, got {outcome!r}")
        with transaction(self._engine) as session:
            audit.append(session, actor=self.principal or "(none)", action=action, resource=resource,
                         outcome=outcome, details=details)
        self._maybe_checkpoint()

    def kek_for_attested_release(self, recipient: str, details: dict) -> bytes:
        """The key-encryption key, for the TEE key broker to wrap to a workload whose attestation it accepted.

        Authorised as key management (the ``rotate-keys`` right, held by admins) and logged as
        ``tee-key-release`` with ``details`` in the same transaction, so no key leaves without its entry.
        Only a vault unlocked by a key (file or environment) can be released this way: the released key is
        what opens it (`KeySource.key`); a passphrase vault would hand out an Argon2 output no one can use.

        Raises:
            AccessDeniedError: If the acting principal may not manage keys (the denial is logged).
            VaultError: If the vault is unlocked by a passphrase.
        """
        with self._operation(access.ROTATE_KEYS, f"kek:{self._kek_id}") as session:
            kind = json.loads(session.get(MetaRow, 1).kek_source).get("kind")
            if kind != "key":
                raise VaultError("attested key release needs a vault unlocked by a key file, not a "
                                 f"{kind}; rotate it to a key file first")
            audit.append(session, actor=self.principal, action="tee-key-release", resource=recipient,
                         outcome=audit.ALLOWED, details=details)
        self._maybe_checkpoint()
        return self._kek


def _stored_records(*extra) -> Select:
    """The columns of stored records that opening them needs (and ``extra`` ones), with the subject's pseudonym."""
    return select(RecordRow.ref, RecordRow.subject_pk, RecordRow.kind, RecordRow.key_version, RecordRow.revision,
                  RecordRow.chunk_bytes, RecordRow.plaintext_bytes, RecordRow.payload, *extra,
                  SubjectRow.ref.label("subject_ref")).join(SubjectRow, SubjectRow.id == RecordRow.subject_pk)


def _check_purpose_name(name: str) -> str:
    if not isinstance(name, str) or not _PURPOSE_NAME.fullmatch(name):
        raise VaultError(f"purpose name {name!r} must be 1 to 64 of a-z 0-9 -, e.g. model-training")
    return name


def _check_label(value: str, field_name: str, *, required: bool) -> None:
    if not isinstance(value, str) or len(value) > 64 or (required and not value.strip()):
        raise VaultError(f"{field_name} must be text of 1 to 64 characters, got {value!r}")


def _tombstone_entry(item: dict) -> tuple[str, datetime, datetime | None]:
    try:
        ref, deleted_at = item["ref"], datetime.fromisoformat(item["deleted_at"])
        lifted_at = datetime.fromisoformat(item["lifted_at"]) if item.get("lifted_at") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise VaultError(f"malformed tombstone {item!r}: {exc}") from None
    if not isinstance(ref, str) or not re.fullmatch(r"[0-9a-f]{64}", ref):
        raise VaultError(f"malformed tombstone {item!r}: ref must be 64 hex digits")
    return ref, _aware(deleted_at), _aware(lifted_at)


def _source_label(source: str) -> str:
    """Where a batch came from, for the log: a file's name could be personal, so it is hashed."""
    if source.startswith("file:"):
        return "file:" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return source[:64]
