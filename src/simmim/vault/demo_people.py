"""The private demo's people: their records go into a vault with the choices real people make
(most consent to model training, some never answer, some withdraw, one asks to be deleted), and
training reads only what the vault releases."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simmim.config import VaultSection
from simmim.data.records import Record
from simmim.vault.audit import generate_signing_key
from simmim.vault.keys import KeySource, write_key_file
from simmim.vault.training import ReleasedData, release_for_training
from simmim.vault.vault import Vault

NEVER_ANSWERED = 0.05  # fraction of people who never consented
WITHDRAWN = 0.03  # fraction who consented, then withdrew
NOTICE = "demo-notice-v1"


@dataclass(frozen=True)
class DemoVault:
    section: VaultSection  # how training opens it
    released: ReleasedData
    people: int
    choices: dict[str, int]  # consented / never_answered / withdrawn / deleted


def vault_of_people(records: list[Record], root: Path, seed: int) -> DemoVault:
    """A fresh vault in `root` (database, key file and audit signing key), holding `records`, with
    the simulated people's consent choices; returns what it releases for model training."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    key_file, audit_key = write_key_file(root / "vault.key"), generate_signing_key(root / "audit.key")
    section = VaultSection(url=f"sqlite:///{(root / 'vault.db').resolve()}", principal="trainer",
                           key_file=str(key_file), audit_key=str(audit_key))
    people = sorted({r.subject_id for r in records})
    order = np.random.default_rng(seed).permutation(len(people))
    n_never, n_withdrawn = round(NEVER_ANSWERED * len(people)), round(WITHDRAWN * len(people))
    never = [people[i] for i in order[:n_never]]
    withdrawn = [people[i] for i in order[n_never:n_never + n_withdrawn]]
    deleted = people[order[n_never + n_withdrawn]]
    with Vault.create(section.url, KeySource.key_file(key_file), audit_key=audit_key) as vault:
        vault.add_principal("trainer", "trainer")
        vault.ingest(records, source="simmim demo")
        vault.grant_consent(sorted(set(people) - set(never)), "model-training", notice_version=NOTICE)
        vault.withdraw_consent(withdrawn, "model-training")
        vault.delete_subject(deleted)
    choices = {"consented": len(people) - len(never) - len(withdrawn) - 1, "never_answered": len(never),
               "withdrawn": len(withdrawn), "deleted": 1}
    return DemoVault(section=section, released=release_for_training(section), people=len(people), choices=choices)
