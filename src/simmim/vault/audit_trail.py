"""The audit log seen from the vault: verifying it (and the consent rows against it), reading its newest
entries, and appending events of components outside the vault (the TEE key broker)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from simmim.errors import VaultError
from simmim.vault import access, audit
from simmim.vault.consent_audit import CONSENT_LOG_ACTIONS, consent_problems
from simmim.vault.database import transaction
from simmim.vault.schema import AuditEntryRow
from simmim.vault.tombstone_audit import tombstone_problems
from simmim.vault.unlocked import UnlockedVault


class AuditTrail(UnlockedVault):
    """`Vault.verify`, `audit_entries` and `record_event`."""

    def verify(self, audit_key: audit.AuditKey | str | Path | None = None) -> audit.VerifyReport:
        """Checks the audit log's chain and signed checkpoints with the audit key (public or private), every
        consent row and consent event against the grants, withdrawals and deletions the log holds, and every
        tombstone against the deletions and returns it holds."""
        key = audit.AuditKey.load(audit_key) if isinstance(audit_key, (str, Path)) else (audit_key or self.audit_key)
        if key is None:
            raise VaultError("verify needs the audit public key: pass --audit-key")
        with self._operation(access.VERIFY, "audit-log") as session:
            report = audit.verify_log(session, key, self.vault_id)
            report.consents_checked, problems = consent_problems(session)
            report.problems.extend(problems)
            report.tombstones_checked, problems = tombstone_problems(session)
            report.problems.extend(problems)
            return report

    def audit_entries(self, limit: int = 50) -> list[dict]:
        """The newest audit entries (pseudonyms only), newest last."""
        with self._operation(access.VERIFY, "audit-log") as session:
            rows = session.scalars(select(AuditEntryRow).order_by(AuditEntryRow.seq.desc()).limit(limit)).all()
            return [{"seq": r.seq, "at": r.at, "actor": r.actor, "action": r.action, "resource": r.resource,
                     "purpose": r.purpose, "outcome": r.outcome, "details": json.loads(r.details)}
                    for r in reversed(rows)]

    def record_event(self, action: str, resource: str = "", *, outcome: str = audit.DONE,
                     details: dict | None = None) -> None:
        """Appends one entry to the audit log as the acting principal, for components outside the vault
        whose decisions belong in its chain (the TEE key broker logs every refusal here).

        ``details`` must hold no personal data: pseudonyms, measurements, counts and reasons only.

        Raises:
            VaultError: If ``outcome`` is not one of the audit log's outcomes, or ``action`` is one the vault's
                own operations log and `verify` reads (a consent change or a deletion).
        """
        if outcome not in (audit.ALLOWED, audit.DENIED, audit.DONE, audit.FAILED):
            raise VaultError(f"audit outcome must be allowed, denied, done or failed, got {outcome!r}")
        if action in CONSENT_LOG_ACTIONS:
            raise VaultError(f"audit action {action!r} is logged only by the vault's own operation; choose another "
                             f"name")
        with transaction(self._engine) as session:
            audit.append(session, actor=self.principal or "(none)", action=action, resource=resource,
                         outcome=outcome, details=details)
        self._maybe_checkpoint()
