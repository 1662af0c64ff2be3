"""The vault's audit log: append-only, hash-chained, with Ed25519-signed checkpoints.

Entry ``n`` stores ``prev_hash`` (entry ``n-1``'s hash, 64 zeros for the first) and
``entry_hash = SHA-256(0x00 || prev_hash || canonical JSON of (n, at, actor, action, resource,
purpose, outcome, details))``. Entries hold pseudonyms (keyed hashes), principal names, actions,
purposes and counts: never an id, caption or pixel of a person.

A bare hash chain can be recomputed by anyone who can write to the database, so the head is
anchored: a checkpoint is an Ed25519 signature over ``(vault id, size, head hash, time)`` made
with a key that lives in a file outside the database. Checkpoints are stored in the database and
appended to a JSON-lines file beside the signing key (``<key>.checkpoints.jsonl``), so deleting
them from the database does not hide a truncation either.

`verify_log` recomputes the chain and checks every checkpoint; it names the first entry of each
problem: changed (hash mismatch), missing (gap in the numbering), inserted or reordered (does not
follow its predecessor), and truncation (a checkpoint covers entries the log no longer has).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from simmim.errors import VaultError
from simmim.vault.keys import write_secret_file
from simmim.vault.schema import AuditCheckpointRow, AuditEntryRow, AuditHeadRow

GENESIS = "0" * 64
CHECKPOINT_CONTEXT = "simmim-vault-checkpoint/v1"
ALLOWED, DENIED, DONE, FAILED = "allowed", "denied", "done", "failed"


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, resource: str, purpose: str,
               outcome: str, details: str) -> str:
    body = _canonical([seq, at, actor, action, resource, purpose, outcome, details])
    return hashlib.sha256(b"\x00" + prev_hash.encode("ascii") + body).hexdigest()


def _row_hash(row: AuditEntryRow, prev_hash: str) -> str:
    return entry_hash(prev_hash, row.seq, row.at, row.actor, row.action, row.resource, row.purpose, row.outcome,
                      row.details)


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def lock_head(session: Session) -> AuditHeadRow:
    """The chain head, locked for this transaction (created empty on first use).

    The lock holds until the transaction ends and a session is one transaction (`database.transaction`),
    so later calls in the same session take the head already locked instead of asking again.
    """
    head = session.info.get("audit_head")
    if head is not None:
        return head
    head = session.get(AuditHeadRow, 1, with_for_update=True)
    if head is None:
        head = AuditHeadRow(id=1, seq=0, entry_hash=GENESIS)
        session.add(head)
        session.flush()
    session.info["audit_head"] = head
    return head


def append(session: Session, *, actor: str, action: str, resource: str = "", purpose: str = "",
           outcome: str = DONE, details: dict | None = None) -> AuditEntryRow:
    """Appends one entry inside the caller's transaction (so it commits or rolls back with the work it logs)."""
    head = lock_head(session)
    seq = head.seq + 1
    at = now_text()
    details_text = _canonical(details or {}).decode("utf-8")
    digest = entry_hash(head.entry_hash, seq, at, actor, action, resource, purpose, outcome, details_text)
    row = AuditEntryRow(seq=seq, at=at, actor=actor, action=action, resource=resource, purpose=purpose,
                        outcome=outcome, details=details_text, prev_hash=head.entry_hash, entry_hash=digest)
    session.add(row)
    head.seq, head.entry_hash = seq, digest
    return row


# ------------------------------------------------------------------------------------------- signing key


def generate_signing_key(path: str | Path) -> Path:
    """Writes a new Ed25519 private key (PEM, owner-only) and refuses to overwrite an existing file."""
    path = Path(path)
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    return write_secret_file(path, pem, "audit signing key")


def _fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _checkpoint_message(vault_id: str, seq: int, head_hash: str, at: str) -> bytes:
    return _canonical([CHECKPOINT_CONTEXT, vault_id, seq, head_hash, at])


@dataclass(frozen=True)
class AuditKey:
    """The audit key read from its file: a private key signs and verifies, a public key only verifies."""

    path: Path
    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> AuditKey:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VaultError(f"cannot read the audit key {path}: {exc.strerror or exc}") from None
        try:
            if b"PRIVATE KEY" in data:
                private = serialization.load_pem_private_key(data, password=None)
                if not isinstance(private, Ed25519PrivateKey):
                    raise ValueError("not an Ed25519 key")
                return cls(path, private.public_key(), private)
            public = serialization.load_pem_public_key(data)
            if not isinstance(public, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return cls(path, public)
        except ValueError as exc:
            raise VaultError(f"{path} is not an Ed25519 PEM key ({exc})") from None

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.public)

    @property
    def anchor_path(self) -> Path:
        """The checkpoints' copy outside the database (beside the private key; give it to the verifier)."""
        return self.path.with_name(self.path.name + ".checkpoints.jsonl")

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_checkpoint(session: Session, key: AuditKey, vault_id: str) -> AuditCheckpointRow | None:
    """Signs the current head if it has no checkpoint yet; returns the new checkpoint or None."""
    if key.private is None:
        raise VaultError(f"{key.path} is a public key; signing checkpoints needs the private key")
    head = lock_head(session)
    if head.seq == 0 or session.get(AuditCheckpointRow, head.seq) is not None:
        return None
    at = now_text()
    signature = key.private.sign(_checkpoint_message(vault_id, head.seq, head.entry_hash, at)).hex()
    row = AuditCheckpointRow(seq=head.seq, entry_hash=head.entry_hash, at=at, key_fingerprint=key.fingerprint,
                             signature=signature)
    session.add(row)
    line = {"vault_id": vault_id, "seq": row.seq, "entry_hash": row.entry_hash, "at": at,
            "key_fingerprint": row.key_fingerprint, "signature": signature}
    with open(key.anchor_path, "a", encoding="utf-8") as anchor:
        anchor.write(json.dumps(line) + "\n")
        anchor.flush()
        os.fsync(anchor.fileno())
    return row


def unsigned_entries(session: Session) -> int:
    """Entries after the newest checkpoint."""
    head = session.get(AuditHeadRow, 1)
    last = session.scalar(select(func.max(AuditCheckpointRow.seq))) or 0
    return (head.seq if head else 0) - last


# ---------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    """What `verify_log` found (and `Vault.verify`, which also checks the consent and tombstone rows against
    the log with `consent_audit` and `tombstone_audit`). ``problems`` is empty when the log is intact and
    those rows match it."""

    entries: int = 0
    checkpoints: int = 0
    last_checkpoint: int = 0
    consents_checked: int = 0
    tombstones_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _anchored_checkpoints(key: AuditKey, vault_id: str) -> list[dict]:
    if not key.anchor_path.is_file():
        return []
    lines = key.anchor_path.read_text(encoding="utf-8").splitlines()
    return [item for item in (json.loads(line) for line in lines if line.strip()) if item["vault_id"] == vault_id]


def verify_log(session: Session, key: AuditKey, vault_id: str) -> VerifyReport:
    """Recomputes the chain and checks every checkpoint (database and anchor file) against it."""
    report = VerifyReport()
    recomputed: dict[int, str] = {}  # seq -> hash recomputed from content alone
    expected_seq, stored_prev, chain = 1, GENESIS, GENESIS
    rows = session.execute(select(AuditEntryRow).order_by(AuditEntryRow.seq).execution_options(yield_per=2000))
    for row in rows.scalars():
        report.entries += 1
        if row.seq != expected_seq:
            missing = f"{expected_seq}" if row.seq == expected_seq + 1 else f"{expected_seq} to {row.seq - 1}"
            report.problems.append(f"entry {missing} missing: deleted from the log (the next entry is {row.seq})")
        elif row.prev_hash != stored_prev:
            report.problems.append(f"entry {row.seq} does not follow entry {row.seq - 1}: an entry was inserted, "
                                   f"reordered or replaced here")
        if _row_hash(row, row.prev_hash) != row.entry_hash:
            report.problems.append(f"entry {row.seq} was modified: its content does not match its hash")
        chain = _row_hash(row, chain)
        recomputed[row.seq] = chain
        stored_prev, expected_seq = row.entry_hash, row.seq + 1
    last_seq = expected_seq - 1

    stored = [{"seq": c.seq, "entry_hash": c.entry_hash, "at": c.at, "signature": c.signature, "where": "database"}
              for c in session.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq))]
    anchored = [{**item, "where": str(key.anchor_path)} for item in _anchored_checkpoints(key, vault_id)]
    in_db = {(c["seq"], c["signature"]) for c in stored}
    checkpoints = stored + [c for c in anchored if (c["seq"], c["signature"]) not in in_db]
    for item in sorted(checkpoints, key=lambda c: c["seq"]):
        seq = item["seq"]
        try:
            key.public.verify(bytes.fromhex(item["signature"]),
                              _checkpoint_message(vault_id, seq, item["entry_hash"], item["at"]))
        except (InvalidSignature, ValueError):
            report.problems.append(f"checkpoint at entry {seq} ({item['where']}): signature is not valid for "
                                   f"audit key {key.fingerprint[:16]}")
            continue
        report.checkpoints += 1
        report.last_checkpoint = max(report.last_checkpoint, seq)
        if seq > last_seq:
            report.problems.append(f"log truncated: checkpoint at entry {seq} is signed but the log ends at entry "
                                   f"{last_seq}; entries {last_seq + 1} to {seq} are gone")
        elif recomputed.get(seq) != item["entry_hash"]:
            report.problems.append(f"entries up to {seq} do not match the signed checkpoint at entry {seq}: "
                                   f"the log was rewritten at or before entry {seq}")
    if anchored and not stored:
        report.problems.append("the database holds no checkpoints but the anchor file does: they were deleted")
    head = session.get(AuditHeadRow, 1)
    if head is not None and head.seq != last_seq:
        report.problems.append(f"the chain head says {head.seq} entries, the log has entries up to {last_seq}")
    return report
