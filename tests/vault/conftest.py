"""Fixtures of the vault tests: each test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is a throwaway cluster (``initdb`` + ``pg_ctl``) in a temporary folder,
listening on a free loopback port, started once per session and stopped at its end. A missing
server fails the tests (it does not skip them): CI installs PostgreSQL. Its binaries are found
on PATH or in /usr/lib/postgresql/*/bin; as root the server runs as the ``postgres`` user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from simmim.data import synthetic
from simmim.vault import KeySource, Vault, generate_signing_key

BACKENDS = ("sqlite", "postgresql")
TEST_KEY = bytes(range(32))
PG_USER = "vault"


def _pg_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed (apt-get install postgresql); the vault tests need a "
                    f"real server", pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a fresh PostgreSQL cluster (database ``postgres``), stopped at the end of the session."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="simmim-vault-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    try:
        subprocess.run(_as_server_user([initdb, "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                                        "--no-sync"]), check=True, capture_output=True, timeout=120)
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off")
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "server.log"),
                                        "-w", "-t", "60", "start"]), check=True, capture_output=True, timeout=90)
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}{log}", pytrace=False)
    try:
        yield f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _admin_sql(server: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """An empty database on each backend: a SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vault.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"vault_{uuid.uuid4().hex[:12]}"
    _admin_sql(server, f"CREATE DATABASE {name}")
    yield f"{server}/{name}"
    _admin_sql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def key_source() -> KeySource:
    return KeySource.key(TEST_KEY)


@pytest.fixture
def audit_key_path(tmp_path) -> Path:
    return generate_signing_key(tmp_path / "audit.key")


@pytest.fixture
def vault(db_url, key_source, audit_key_path):
    """A new vault acting as its admin, with an audit signing key outside the database."""
    opened = Vault.create(db_url, key_source, audit_key=audit_key_path, max_payload_bytes=1 << 20)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def records():
    """50 synthetic image records of 8 subjects, and 4 clips of subjects among them."""
    return synthetic.generate(50, seed=3) + synthetic.generate(4, seed=3, kind="video", frames=3)


def subjects_of(records) -> list[str]:
    return sorted({record.subject_id for record in records})


def run_sql(db_url: str, statement: str, **params) -> list:
    """Runs one statement on the vault's database behind its back (as an attacker or a crash would)."""
    from sqlalchemy import text

    from simmim.vault.database import make_engine, parse_url

    engine = make_engine(parse_url(db_url))
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()
