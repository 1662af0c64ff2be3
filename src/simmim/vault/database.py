"""Connecting to the vault's database, transactions, and bringing its schema to the newest migration.

Conventions are the privacy ledger's: every operation is one transaction; on SQLite the
transaction starts with ``BEGIN IMMEDIATE`` (writers are serialised before they read), the
journal is WAL with full sync, and deleted content is overwritten (``secure_delete``), so a
shredded data key does not linger in free pages. On PostgreSQL (``postgresql://`` URLs use the
psycopg 3 driver) writers serialise on the audit head row (``FOR UPDATE``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import ColumnElement, any_, bindparam, inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from simmim import storage
from simmim.errors import VaultError
from simmim.storage import safe_url

VAULT_URL_ENV = "SIMMIM_VAULT_URL"
DEFAULT_VAULT_URL = "sqlite:///runs/vault.db"
VERSION_TABLE = "vault_alembic_version"
MIGRATIONS = Path(__file__).parent / "migrations"
IN_CLAUSE = 500  # values per IN (...) query


def vault_url(url: str | None = None) -> str:
    """`url` if given, else the ``SIMMIM_VAULT_URL`` environment variable, else ``runs/vault.db``."""
    return url or os.environ.get(VAULT_URL_ENV) or DEFAULT_VAULT_URL


def parse_url(url: str | None) -> URL:
    """The SQLAlchemy URL; a bare ``postgresql://`` gets the psycopg 3 driver."""
    try:
        parsed = make_url(vault_url(url))
    except SQLAlchemyError as exc:
        raise VaultError(f"bad vault database URL: {exc}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: URL) -> Engine:
    """An engine with the shared conventions (`simmim.storage`), deleted content overwritten on SQLite."""
    return storage.make_engine(url, secure_delete=True)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose whole body is one transaction: committed on success, rolled back on any error."""
    with storage.transaction(engine, VaultError, "vault database", refused_hint=(
            "If the audit log was altered, `simmim vault verify` says where")) as session:
        yield session


def among(session: Session, column, values) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``: one parameter instead of one per
    value (psycopg takes a noticeable time to parse a statement with hundreds of placeholders)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def in_batches(items: Sequence, size: int = IN_CLAUSE) -> Iterable[Sequence]:
    """``items`` in slices small enough for one ``IN (...)`` query each."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def stored_value(session: Session, column, value):
    """``value`` as ``column``'s type binds it on this session's database (rendered once, to bind many times)."""
    dialect = session.get_bind().dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process is not None else value


def utc_now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; they were written in UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


def upgrade_schema(engine: Engine) -> None:
    """Applies every migration not yet applied (nothing when the schema is current)."""
    from alembic import command

    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "head")
    except (SQLAlchemyError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise VaultError(f"cannot prepare the vault schema at {safe_url(engine.url)}: {reason}") from None


def schema_revision(engine: Engine) -> str | None:
    """The applied migration, or None for a database the vault has never been created in."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def head_revision() -> str:
    """The newest migration shipped with this version of SimMIM."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
