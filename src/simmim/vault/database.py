"""Connecting to the vault's database, transactions, and bringing its schema to the newest migration.

Conventions are the privacy ledger's: every operation is one transaction; on SQLite the
transaction starts with ``BEGIN IMMEDIATE`` (writers are serialised before they read), the
journal is WAL with full sync, and deleted content is overwritten (``secure_delete``), so a
shredded data key does not linger in free pages. On PostgreSQL (``postgresql://`` URLs use the
psycopg 3 driver) writers serialise on the audit head row (``FOR UPDATE``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import ColumnElement, any_, bindparam, create_engine, event, inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from simmim.errors import VaultError

VAULT_URL_ENV = "SIMMIM_VAULT_URL"
DEFAULT_VAULT_URL = "sqlite:///runs/vault.db"
VERSION_TABLE = "vault_alembic_version"
MIGRATIONS = Path(__file__).parent / "migrations"
# How long a process waits for another one's write transaction before giving up.
_LOCK_TIMEOUT_SECONDS = 60


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
    """An engine with the vault's connection settings (see the module docstring)."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": _LOCK_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        # Take transaction control from the sqlite3 driver so that we start them with BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")  # deleted rows (wrapped keys) are zeroed, not left in free pages
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose whole body is one transaction: committed on success, rolled back on any error."""
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
    except OperationalError as exc:
        raise VaultError(f"vault database at {safe_url(engine.url)} unavailable: {exc.orig}") from None
    except IntegrityError as exc:
        raise VaultError(f"vault database at {safe_url(engine.url)} refused a write ({exc.orig}); nothing of it was "
                         f"stored. If the audit log was altered, `simmim vault verify` says where") from None


def safe_url(url: URL) -> str:
    """The URL for messages: never the password."""
    return url.render_as_string(hide_password=True)


def among(session: Session, column, values) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``: one parameter instead of one per
    value (psycopg takes a noticeable time to parse a statement with hundreds of placeholders)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


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
