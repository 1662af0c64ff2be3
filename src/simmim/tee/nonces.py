"""Single-use challenge nonces for key release, kept in a database so a restart does not reopen replay.

One table, ``tee_nonces`` (nonce hex, issued, expires, used; times in unix microseconds), in any database
SQLAlchemy reaches, with the conventions of `simmim.storage` (one transaction per operation, SQLite in WAL
mode with ``BEGIN IMMEDIATE``, so two brokers cannot both consume the same nonce). `consume` marks a nonce
used on its first presentation whatever the outcome of the attestation that follows, so each nonce is
tried at most once.
"""

from __future__ import annotations

import os
from datetime import datetime

from sqlalchemy import BigInteger, String, delete
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from simmim import storage
from simmim.tee.claims import AttestationError, utc

NONCE_BYTES = 32
DEFAULT_NONCE_URL = "sqlite:///runs/tee-nonces.db"


class _Base(DeclarativeBase):
    pass


class NonceRow(_Base):
    __tablename__ = "tee_nonces"

    nonce: Mapped[str] = mapped_column(String(2 * NONCE_BYTES), primary_key=True)
    issued_us: Mapped[int] = mapped_column(BigInteger)
    expires_us: Mapped[int] = mapped_column(BigInteger, index=True)
    used_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


def _micros(moment: datetime) -> int:
    return int(utc(moment).timestamp() * 1_000_000)


class NonceStore:
    """Issues and consumes nonces; ``url`` is a SQLAlchemy database URL (default ``runs/tee-nonces.db``)."""

    def __init__(self, url: str = DEFAULT_NONCE_URL) -> None:
        try:
            self._engine = storage.make_engine(make_url(url))
            _Base.metadata.create_all(self._engine)
        except (SQLAlchemyError, ValueError) as exc:
            raise AttestationError(f"cannot open the nonce store {url}: {getattr(exc, 'orig', None) or exc}") from None

    def close(self) -> None:
        self._engine.dispose()

    def issue(self, now: datetime, ttl_seconds: float) -> bytes:
        """A new random nonce usable once until ``now + ttl_seconds``; forgets nonces that expired."""
        nonce, issued = os.urandom(NONCE_BYTES), _micros(now)
        with storage.transaction(self._engine, AttestationError, "nonce store") as session:
            session.execute(delete(NonceRow).where(NonceRow.expires_us < issued))
            session.add(NonceRow(nonce=nonce.hex(), issued_us=issued, expires_us=issued + int(ttl_seconds * 1e6)))
        return nonce

    def consume(self, nonce: bytes, now: datetime) -> str | None:
        """Marks ``nonce`` used; returns why it cannot be used (unknown, already used, expired), or None if fresh."""
        if len(nonce) != NONCE_BYTES:
            return f"the nonce must be {NONCE_BYTES} bytes, got {len(nonce)}"
        moment = _micros(now)
        with storage.transaction(self._engine, AttestationError, "nonce store") as session:
            row = session.get(NonceRow, nonce.hex())
            if row is None:
                return "unknown nonce: not issued by this broker, or expired and forgotten"
            if row.used_us is not None:
                return "replayed nonce: it was already presented once"
            row.used_us = moment
            if moment > row.expires_us:
                return f"stale nonce: it expired {(moment - row.expires_us) / 1e6:.0f} s ago"
            if moment < row.issued_us:
                return "the nonce was issued after the time of this request"
        return None
