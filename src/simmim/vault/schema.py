"""The vault's tables (SQLAlchemy 2 models); the Alembic migrations in ``migrations/`` create them.

No column holds personal data in the clear:

* subjects and records are named by pseudonyms (``ref``): keyed hashes (HMAC-SHA256 with the
  vault's index key) of the subject id and of the record id; the ids themselves live only inside
  the encrypted payloads;
* payloads (pixels, captions, ids, scene) are AES-256-GCM ciphertexts under the subject's data key;
* data keys are stored wrapped by the key-encryption key, which is never stored;
* the audit log holds pseudonyms, principal names, actions and counts.

What stays readable is structure: how many records a pseudonym has, their kind and size, when
they were written, and the consent state per purpose.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

REF_LENGTH = 64  # hex of an HMAC-SHA256
NAME_LENGTH = 200


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    """The single row describing the vault: its id, how the KEK is obtained and the wrapped vault secret."""

    __tablename__ = "vault_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    vault_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kek_id: Mapped[str] = mapped_column(String(36))
    kek_source: Mapped[str] = mapped_column(Text)  # JSON: kind, and for passphrases the KDF, salt and cost
    secret_wrapped: Mapped[bytes] = mapped_column(LargeBinary)  # nonce || AES-GCM(vault secret)
    max_payload_bytes: Mapped[int] = mapped_column(BigInteger)
    chunk_bytes: Mapped[int] = mapped_column(Integer)


class SubjectRow(Base):
    __tablename__ = "vault_subjects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(String(REF_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SubjectKeyRow(Base):
    """One version of a subject's data key, wrapped by the KEK; destroying every row shreds the subject."""

    __tablename__ = "vault_subject_keys"
    __table_args__ = (UniqueConstraint("subject_pk", "version", name="uq_vault_subject_key_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("vault_subjects.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)  # nonce || AES-GCM(data key)
    kek_id: Mapped[str] = mapped_column(String(36))
    encryptions: Mapped[int] = mapped_column(BigInteger)  # AES-GCM messages sealed so far (nonce bound)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecordRow(Base):
    __tablename__ = "vault_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(String(REF_LENGTH), unique=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("vault_subjects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # image | video | text
    key_version: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    plaintext_bytes: Mapped[int] = mapped_column(BigInteger)
    chunk_bytes: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # per chunk: nonce || ciphertext || tag
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PurposeRow(Base):
    __tablename__ = "vault_purposes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsentEventRow(Base):
    """Consent history: every grant and withdrawal, never updated."""

    __tablename__ = "vault_consent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("vault_subjects.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(ForeignKey("vault_purposes.name"))
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    notice_version: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))


class ConsentStateRow(Base):
    """The current consent of a subject for a purpose (the newest event), for release queries."""

    __tablename__ = "vault_consents"

    subject_pk: Mapped[int] = mapped_column(ForeignKey("vault_subjects.id", ondelete="CASCADE"), primary_key=True)
    purpose: Mapped[str] = mapped_column(ForeignKey("vault_purposes.name"), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TombstoneRow(Base):
    """A deleted subject, by pseudonym only; refuses re-ingest until the subject consents again."""

    __tablename__ = "vault_tombstones"

    ref: Mapped[str] = mapped_column(String(REF_LENGTH), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    records_deleted: Mapped[int] = mapped_column(Integer)
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SnapshotRow(Base):
    __tablename__ = "vault_snapshots"

    id: Mapped[str] = mapped_column(String(REF_LENGTH), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    record_count: Mapped[int] = mapped_column(Integer)
    subject_count: Mapped[int] = mapped_column(Integer)
    subjects_hash: Mapped[str] = mapped_column(String(REF_LENGTH))


class SnapshotSubjectRow(Base):
    """Which subjects (by pseudonym) a snapshot included; kept after deletion to find affected models."""

    __tablename__ = "vault_snapshot_subjects"

    snapshot_id: Mapped[str] = mapped_column(ForeignKey("vault_snapshots.id"), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(REF_LENGTH), primary_key=True, index=True)


class ModelLineageRow(Base):
    """A model checkpoint trained on a snapshot; flagged when a subject of that snapshot is deleted."""

    __tablename__ = "vault_model_lineage"

    checkpoint_id: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("vault_snapshots.id"), index=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    description: Mapped[str] = mapped_column(Text)
    deleted_subjects: Mapped[int] = mapped_column(Integer)  # subjects deleted since it was trained
    flagged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PrincipalRow(Base):
    __tablename__ = "vault_principals"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TokenRow(Base):
    """An API token: only its HMAC is stored; the token itself is shown once when created."""

    __tablename__ = "vault_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal: Mapped[str] = mapped_column(ForeignKey("vault_principals.name", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(REF_LENGTH), unique=True)
    scopes: Mapped[str] = mapped_column(Text)  # JSON list
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntryRow(Base):
    """One audit entry; UPDATE and DELETE are refused by triggers (see the migrations)."""

    __tablename__ = "vault_audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC, hashed as written
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(NAME_LENGTH))
    purpose: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON, pseudonyms and counts only
    prev_hash: Mapped[str] = mapped_column(String(REF_LENGTH))
    entry_hash: Mapped[str] = mapped_column(String(REF_LENGTH))


class AuditHeadRow(Base):
    """The chain's newest entry; writers lock this row, so appends are serialised on every database."""

    __tablename__ = "vault_audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(REF_LENGTH))


class AuditCheckpointRow(Base):
    """An Ed25519 signature over (vault id, size, head hash); the signing key is never in the database."""

    __tablename__ = "vault_audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_hash: Mapped[str] = mapped_column(String(REF_LENGTH))
    at: Mapped[str] = mapped_column(String(40))
    key_fingerprint: Mapped[str] = mapped_column(String(REF_LENGTH))
    signature: Mapped[str] = mapped_column(String(128))  # hex
