"""The personal-data vault: consent and purpose, encryption at rest, crypto-shredding, access control, audit.

Training reads data only through it::

    from simmim.vault import KeySource, Vault

    with Vault.open("sqlite:///runs/vault.db", KeySource.from_environment(), principal="trainer") as vault:
        released = vault.release("model-training")  # Release: .records (list[Record]), .snapshot_id
        ...                                          # train on released.records
        vault.record_model(checkpoint_id, released.snapshot_id)

See docs/vault.md for the threat model and the CLI (`simmim vault ...`).
"""

from simmim.vault.audit import AuditKey, VerifyReport, generate_signing_key
from simmim.vault.keys import Argon2Cost, KeySource, write_key_file
from simmim.vault.vault import (
    DEFAULT_PURPOSES,
    AccessDeniedError,
    DeletionReport,
    IngestReport,
    Release,
    Vault,
)

__all__ = [
    "DEFAULT_PURPOSES",
    "AccessDeniedError",
    "Argon2Cost",
    "AuditKey",
    "DeletionReport",
    "IngestReport",
    "KeySource",
    "Release",
    "Vault",
    "VerifyReport",
    "generate_signing_key",
    "write_key_file",
]
