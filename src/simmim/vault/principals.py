"""Principals and API tokens: adding principals with roles, creating and revoking tokens, authenticating one."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from simmim.errors import VaultError
from simmim.vault import access, audit
from simmim.vault.database import aware, transaction, utc_now
from simmim.vault.schema import PrincipalRow, TokenRow
from simmim.vault.unlocked import AccessDeniedError, UnlockedVault


class PrincipalsAndTokens(UnlockedVault):
    """`Vault.add_principal`, `principals`, `create_token`, `revoke_token`; tokens given to `Vault.open`."""

    def _authenticate(self, token: str) -> None:
        token_id, secret = access.split_token(token)
        with transaction(self._engine) as session:
            row = session.get(TokenRow, token_id)
            reason = None
            if row is None or not access.digests_match(row.digest, access.token_digest(self._index_key, secret)):
                reason = "unknown token"
            elif row.revoked_at is not None:
                reason = f"token {token_id} was revoked"
            elif aware(row.expires_at) <= utc_now():
                reason = f"token {token_id} expired"
            actor = row.principal if row is not None and reason is None else "(token)"
            audit.append(session, actor=actor, action="authenticate", resource=f"token:{token_id}",
                         outcome=audit.DENIED if reason else audit.ALLOWED, details={"reason": reason or "valid"})
        if reason:
            raise AccessDeniedError(f"token refused: {reason}")
        self.principal = row.principal
        self._grant = access.TokenGrant(token_id, row.principal, access.scopes_from_json(row.scopes),
                                        aware(row.expires_at))

    def add_principal(self, name: str, role: str) -> None:
        name, role = access.check_principal_name(name), access.check_role(role)
        with self._operation(access.MANAGE_PRINCIPALS, f"principal:{name}") as session:
            if session.get(PrincipalRow, name) is not None:
                raise VaultError(f"principal {name!r} already exists")
            session.add(PrincipalRow(name=name, role=role, created_at=utc_now()))
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
            now = utc_now()
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
                row.revoked_at = utc_now()
            audit.append(session, actor=self.principal, action="token-revoke", resource=f"token:{token_id}",
                         details={"principal": row.principal})
