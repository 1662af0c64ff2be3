"""The vault's first schema: subjects, keys, records, consent, tombstones, snapshots, lineage,
principals, tokens and the append-only audit log.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

REF = 64
NAME = 200


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "vault_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vault_id", sa.String(36), nullable=False),
        _when("created_at"),
        sa.Column("kek_id", sa.String(36), nullable=False),
        sa.Column("kek_source", sa.Text, nullable=False),
        sa.Column("secret_wrapped", sa.LargeBinary, nullable=False),
        sa.Column("max_payload_bytes", sa.BigInteger, nullable=False),
        sa.Column("chunk_bytes", sa.Integer, nullable=False),
    )
    op.create_table(
        "vault_subjects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(REF), nullable=False, unique=True),
        _when("created_at"),
    )
    op.create_table(
        "vault_subject_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("vault_subjects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(36), nullable=False),
        sa.Column("encryptions", sa.BigInteger, nullable=False),
        _when("created_at"),
        sa.UniqueConstraint("subject_pk", "version", name="uq_vault_subject_key_version"),
    )
    op.create_index("ix_vault_subject_keys_subject_pk", "vault_subject_keys", ["subject_pk"])
    op.create_table(
        "vault_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ref", sa.String(REF), nullable=False, unique=True),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("vault_subjects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_version", sa.Integer, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("plaintext_bytes", sa.BigInteger, nullable=False),
        sa.Column("chunk_bytes", sa.Integer, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        _when("created_at"),
        _when("updated_at"),
    )
    op.create_index("ix_vault_records_subject_pk", "vault_records", ["subject_pk"])
    op.create_table(
        "vault_purposes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "vault_consent_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("vault_subjects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("purpose", sa.String(64), sa.ForeignKey("vault_purposes.name"), nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        _when("at"),
        sa.Column("notice_version", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
    )
    op.create_index("ix_vault_consent_events_subject_pk", "vault_consent_events", ["subject_pk"])
    op.create_table(
        "vault_consents",
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("vault_subjects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("purpose", sa.String(64), sa.ForeignKey("vault_purposes.name"), primary_key=True),
        sa.Column("granted", sa.Boolean, nullable=False),
        _when("updated_at"),
    )
    op.create_table(
        "vault_tombstones",
        sa.Column("ref", sa.String(REF), primary_key=True),
        _when("deleted_at"),
        sa.Column("records_deleted", sa.Integer, nullable=False),
        _when("lifted_at", nullable=True),
    )
    op.create_table(
        "vault_snapshots",
        sa.Column("id", sa.String(REF), primary_key=True),
        sa.Column("purpose", sa.String(64), nullable=False),
        _when("created_at"),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("subject_count", sa.Integer, nullable=False),
        sa.Column("subjects_hash", sa.String(REF), nullable=False),
    )
    op.create_table(
        "vault_snapshot_subjects",
        sa.Column("snapshot_id", sa.String(REF), sa.ForeignKey("vault_snapshots.id"), primary_key=True),
        sa.Column("subject_ref", sa.String(REF), primary_key=True),
    )
    op.create_index("ix_vault_snapshot_subjects_subject_ref", "vault_snapshot_subjects", ["subject_ref"])
    op.create_table(
        "vault_model_lineage",
        sa.Column("checkpoint_id", sa.String(NAME), primary_key=True),
        sa.Column("snapshot_id", sa.String(REF), sa.ForeignKey("vault_snapshots.id"), nullable=False),
        _when("recorded_at"),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("deleted_subjects", sa.Integer, nullable=False),
        _when("flagged_at", nullable=True),
    )
    op.create_index("ix_vault_model_lineage_snapshot_id", "vault_model_lineage", ["snapshot_id"])
    op.create_table(
        "vault_principals",
        sa.Column("name", sa.String(NAME), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "vault_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("principal", sa.String(NAME), sa.ForeignKey("vault_principals.name", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("digest", sa.String(REF), nullable=False, unique=True),
        sa.Column("scopes", sa.Text, nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("revoked_at", nullable=True),
    )
    op.create_index("ix_vault_tokens_principal", "vault_tokens", ["principal"])
    op.create_table(
        "vault_audit_log",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(NAME), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(NAME), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(REF), nullable=False),
        sa.Column("entry_hash", sa.String(REF), nullable=False),
    )
    op.create_table(
        "vault_audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("entry_hash", sa.String(REF), nullable=False),
    )
    op.create_table(
        "vault_audit_checkpoints",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("entry_hash", sa.String(REF), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("key_fingerprint", sa.String(REF), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    _make_audit_log_append_only()


def _make_audit_log_append_only() -> None:
    """Triggers that refuse UPDATE and DELETE of audit entries: a mistake cannot rewrite history.

    Someone with full database access can drop them; `verify` and the signed checkpoints catch that.
    """
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER vault_audit_log_no_{verb.lower()} BEFORE {verb} ON vault_audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'the vault audit log is append-only'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION vault_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'the vault audit log is append-only'; END $$"
    )
    op.execute(
        "CREATE TRIGGER vault_audit_log_append_only BEFORE UPDATE OR DELETE ON vault_audit_log "
        "FOR EACH ROW EXECUTE FUNCTION vault_audit_log_append_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS vault_audit_log_append_only ON vault_audit_log")
        op.execute("DROP FUNCTION IF EXISTS vault_audit_log_append_only()")
    for table in ("vault_audit_checkpoints", "vault_audit_head", "vault_audit_log", "vault_tokens",
                  "vault_principals", "vault_model_lineage", "vault_snapshot_subjects", "vault_snapshots",
                  "vault_tombstones", "vault_consents", "vault_consent_events", "vault_purposes", "vault_records",
                  "vault_subject_keys", "vault_subjects", "vault_meta"):
        op.drop_table(table)
