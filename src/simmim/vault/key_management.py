"""The key-encryption key: rotating it (rewrapping data keys, not re-encrypting records) and releasing it
to an attested workload (`simmim.tee`)."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from simmim.errors import VaultError
from simmim.vault import access, audit, keys
from simmim.vault.schema import MetaRow, SubjectKeyRow, SubjectRow
from simmim.vault.subject_keys import unwrap_data_key
from simmim.vault.unlocked import UnlockedVault


class KeyManagement(UnlockedVault):
    """`Vault.rotate_keys` and `Vault.kek_for_attested_release`."""

    def rotate_keys(self, new_source: keys.KeySource) -> int:
        """Moves the vault to a new KEK: rewraps the vault secret and every data key; records are untouched.

        Returns:
            How many data keys were rewrapped. Afterwards only the new passphrase or key opens the vault.
        """
        salt = keys.new_salt()
        description = new_source.describe(salt)
        new_kek, new_kek_id = new_source.derive(description), str(uuid.uuid4())
        with self._operation(access.ROTATE_KEYS, "keys") as session:
            meta = session.get(MetaRow, 1)
            rewrapped = 0
            rows = session.execute(select(SubjectKeyRow, SubjectRow.ref)
                                   .join(SubjectRow, SubjectKeyRow.subject_pk == SubjectRow.id))
            for key_row, subject_ref in rows:
                data_key = unwrap_data_key(self._kek, key_row.wrapped, subject_ref, key_row.version, key_row.kek_id)
                key_row.wrapped = keys.wrap(new_kek, data_key,
                                            keys.data_key_context(subject_ref, key_row.version, new_kek_id))
                key_row.kek_id = new_kek_id
                rewrapped += 1
            meta.secret_wrapped = keys.wrap(new_kek, self._vault_secret, keys.secret_context(self.vault_id, new_kek_id))
            meta.kek_id, meta.kek_source = new_kek_id, json.dumps(description)
            audit.append(session, actor=self.principal, action="rotate-keys", resource="keys",
                         details={"data_keys": rewrapped, "kek": new_source.kind})
        self._kek, self._kek_id = new_kek, new_kek_id
        self._maybe_checkpoint()
        return rewrapped

    def kek_for_attested_release(self, recipient: str, details: dict) -> bytes:
        """The key-encryption key, for the TEE key broker to wrap to a workload whose attestation it accepted.

        Authorised as key management (the ``rotate-keys`` right, held by admins) and logged as
        ``tee-key-release`` with ``details`` in the same transaction, so no key leaves without its entry.
        Only a vault unlocked by a key (file or environment) can be released this way: the released key is
        what opens it (`KeySource.key`); a passphrase vault would hand out an Argon2 output no one can use.

        Raises:
            AccessDeniedError: If the acting principal may not manage keys (the denial is logged).
            VaultError: If the vault is unlocked by a passphrase.
        """
        with self._operation(access.ROTATE_KEYS, f"kek:{self._kek_id}") as session:
            kind = json.loads(session.get(MetaRow, 1).kek_source).get("kind")
            if kind != "key":
                raise VaultError("attested key release needs a vault unlocked by a key file, not a "
                                 f"{kind}; rotate it to a key file first")
            audit.append(session, actor=self.principal, action="tee-key-release", resource=recipient,
                         outcome=audit.ALLOWED, details=details)
        self._maybe_checkpoint()
        return self._kek
