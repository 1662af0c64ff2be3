"""An unlocked vault: keys in memory, the acting principal, pseudonyms, and authorised operations.

`UnlockedVault` is what every part of `simmim.vault.Vault` builds on. Its `_operation` is the one
way an operation reaches the database: a write transaction that starts with the access decision
(`access.decide`, default deny) and its audit entry, so the work and the entry that logs it commit
or roll back together. After an operation, `_maybe_checkpoint` signs the log's head when enough
entries are unsigned.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from simmim.errors import VaultError
from simmim.vault import access, audit, keys
from simmim.vault.database import safe_url, transaction
from simmim.vault.schema import MetaRow, PrincipalRow
from simmim.vault.subject_keys import KeyCache


class AccessDeniedError(VaultError):
    """The principal may not do this; the decision is in the audit log."""


class UnlockedVault:
    """The state of an open vault and the authorised-operation machinery its parts share."""

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
        self._key_cache = KeyCache()  # ingest's: see `subject_keys.KeyCache`

    # -------------------------------------------------------------------------------- pseudonyms

    def subject_ref(self, subject_id: str) -> str:
        """The subject's pseudonym (keyed hash); also its tombstone."""
        return hmac.digest(self._index_key, b"subject\x00" + subject_id.encode("utf-8"), "sha256").hex()

    def record_ref(self, record_id: str) -> str:
        return hmac.digest(self._index_key, b"record\x00" + record_id.encode("utf-8"), "sha256").hex()

    # ----------------------------------------------------------------------------- authorisation

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
        if action != access.INGEST:
            self._key_cache.clear()
        try:
            with transaction(self._engine) as session:
                head = audit.lock_head(session)  # serialises writers: the chain and every check-then-write below
                session.info["seq_before"] = head.seq  # what this operation found (see `KeyCache`)
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
