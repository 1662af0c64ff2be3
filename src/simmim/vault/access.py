"""Who may do what: principals with roles, scoped API tokens, and the one `decide` function.

Default deny: a request is allowed only if the principal exists, its role grants the action,
the purpose is one the role may use for that action, and (when a token is used) the token is
unexpired, unrevoked and its scopes include the action (``"release"``) or the action for that
purpose (``"release:model-training"``). The vault logs every decision, allowed or denied.

Tokens are ``smv_<id>_<secret>`` with 32 random secret bytes; the vault stores only
HMAC-SHA256(index key, secret) and compares digests in constant time. A token is shown once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from simmim.errors import VaultError

INGEST, CONSENT, RELEASE, EXPORT, DELETE, RECTIFY = "ingest", "consent", "release", "export-subject", \
    "delete-subject", "rectify"
ROTATE_KEYS, MANAGE_PRINCIPALS, MANAGE_TOKENS, VERIFY, STATS, LINEAGE = "rotate-keys", "manage-principals", \
    "manage-tokens", "verify", "stats", "record-lineage"
ACTIONS = (INGEST, CONSENT, RELEASE, EXPORT, DELETE, RECTIFY, ROTATE_KEYS, MANAGE_PRINCIPALS, MANAGE_TOKENS, VERIFY,
           STATS, LINEAGE)
ANY_PURPOSE = "*"
DSR_PURPOSE = "data-subject-request"

# role -> action -> purposes the role may act for ("" means the action takes no purpose).
ROLES: dict[str, dict[str, frozenset[str]]] = {
    "admin": {action: frozenset({ANY_PURPOSE}) for action in ACTIONS},
    "steward": {INGEST: frozenset({""}), CONSENT: frozenset({ANY_PURPOSE}), EXPORT: frozenset({DSR_PURPOSE}),
                DELETE: frozenset({DSR_PURPOSE}), RECTIFY: frozenset({DSR_PURPOSE}), STATS: frozenset({""})},
    "trainer": {RELEASE: frozenset({"model-training", "evaluation"}), LINEAGE: frozenset({"model-training"}),
                STATS: frozenset({""})},
    "analyst": {RELEASE: frozenset({"analytics"}), STATS: frozenset({""})},
    "auditor": {VERIFY: frozenset({""}), STATS: frozenset({""})},
}
TOKEN_PREFIX = "smv"
TOKEN_SECRET_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class TokenGrant:
    """What a verified token lets its holder do."""

    token_id: str
    principal: str
    scopes: frozenset[str]
    expires_at: datetime


def check_principal_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise VaultError(f"principal name {name!r} must be 1 to 200 of A-Z a-z 0-9 . _ @ -, starting with a "
                         f"letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise VaultError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_scopes(scopes: list[str]) -> list[str]:
    """Scopes are actions, optionally narrowed to a purpose: ``release:model-training``."""
    if not scopes:
        raise VaultError("a token needs at least one scope, e.g. release:model-training")
    for scope in scopes:
        action = scope.split(":", 1)[0]
        if action not in ACTIONS:
            raise VaultError(f"token scope {scope!r}: {action!r} is not one of {', '.join(ACTIONS)}")
    return sorted(set(scopes))


def decide(role: str | None, action: str, purpose: str, grant: TokenGrant | None = None,
           now: datetime | None = None) -> Decision:
    """The access decision (pure; the vault looks up the role and token and logs the result)."""
    if role is None:
        return Decision(False, "unknown principal")
    purposes = ROLES.get(role, {}).get(action)
    if purposes is None:
        return Decision(False, f"role {role} may not {action}")
    if ANY_PURPOSE not in purposes and purpose not in purposes:
        allowed = ", ".join(sorted(p or "(none)" for p in purposes))
        return Decision(False, f"role {role} may {action} only for {allowed}, not {purpose or '(none)'}")
    if grant is not None:
        now = now or datetime.now(UTC)
        if grant.expires_at <= now:
            return Decision(False, f"token {grant.token_id} expired")
        if action not in grant.scopes and f"{action}:{purpose}" not in grant.scopes:
            return Decision(False, f"token {grant.token_id} is not scoped for {action}"
                                   f"{':' + purpose if purpose else ''}")
    return Decision(True, f"role {role}" + (f", token {grant.token_id}" if grant else ""))


def new_token() -> tuple[str, str, str]:
    """(token id, secret, full token); the secret is 32 bytes from the OS CSPRNG, base64url."""
    token_id = os.urandom(8).hex()
    secret = base64.urlsafe_b64encode(os.urandom(TOKEN_SECRET_BYTES)).rstrip(b"=").decode("ascii")
    return token_id, secret, f"{TOKEN_PREFIX}_{token_id}_{secret}"


def split_token(token: str) -> tuple[str, str]:
    """(token id, secret) of a token string."""
    parts = token.strip().split("_", 2) if isinstance(token, str) else []
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not re.fullmatch(r"[0-9a-f]{16}", parts[1]):
        raise VaultError("not a vault token (expected smv_<id>_<secret>)")
    return parts[1], parts[2]


def token_digest(index_key: bytes, secret: str) -> str:
    return hmac.new(index_key, b"token\x00" + secret.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def scopes_from_json(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))
