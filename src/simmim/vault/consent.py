"""Purposes and consent: declaring purposes, granting and withdrawing consent, each logged.

A grant or withdrawal writes an event (`ConsentEventRow`: the history), sets the current state
(`ConsentStateRow`, what `release` selects on) and appends one audit entry (`CONSENT_GRANT` or
`CONSENT_WITHDRAW`) listing the subjects' pseudonyms (and, as ``returning_subjects``, those let back
in after a deletion, whose earlier consent rows are gone), in one transaction. `consent_audit`
replays these entries to check the rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select

from simmim.errors import VaultError
from simmim.vault import access, audit
from simmim.vault.database import utc_now
from simmim.vault.payloads import check_id
from simmim.vault.schema import ConsentEventRow, ConsentStateRow, PurposeRow, SubjectRow, TombstoneRow
from simmim.vault.subject_keys import SealingKeys
from simmim.vault.subjects import add_subjects, live_subject, purge_subject
from simmim.vault.unlocked import UnlockedVault

DEFAULT_PURPOSES = {
    "model-training": "training SimMIM models on the data",
    "evaluation": "measuring a trained model's quality on held-out data",
    "analytics": "aggregate statistics about the data set",
}
_PURPOSE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
CONSENT_GRANT, CONSENT_WITHDRAW = "consent-grant", "consent-withdraw"


class Consent(UnlockedVault):
    """Declaring purposes and recording each subject's consent to them."""

    def declare_purpose(self, name: str, description: str) -> None:
        """Declares a purpose subjects can consent to."""
        name = check_purpose_name(name)
        with self._operation(access.CONSENT, f"purpose:{name}", name) as session:
            if session.get(PurposeRow, name) is not None:
                raise VaultError(f"purpose {name!r} is already declared")
            session.add(PurposeRow(name=name, description=description, created_at=utc_now()))
            audit.append(session, actor=self.principal, action="declare-purpose", resource=f"purpose:{name}",
                         purpose=name)

    def purposes(self) -> dict[str, str]:
        """Declared purposes and their descriptions."""
        with self._operation(access.STATS, "purposes") as session:
            return {row.name: row.description for row in session.scalars(select(PurposeRow).order_by(PurposeRow.name))}

    def grant_consent(self, subject_ids: str | Iterable[str], purpose: str, *, notice_version: str,
                      source: str = "api") -> int:
        """Records consent for a purpose. An unknown subject is registered; a deleted one is let back in.

        Returns:
            How many subjects were new to the vault (or came back after a deletion).
        """
        return self._set_consent(subject_ids, purpose, True, notice_version, source)

    def withdraw_consent(self, subject_ids: str | Iterable[str], purpose: str, *, notice_version: str = "",
                         source: str = "api") -> int:
        """Records a withdrawal; the subject's records leave every later release for that purpose.

        Raises:
            VaultError: If a subject is not in the vault.
        """
        return self._set_consent(subject_ids, purpose, False, notice_version, source)

    def _set_consent(self, subject_ids, purpose: str, granted: bool, notice_version: str, source: str) -> int:
        ids = [subject_ids] if isinstance(subject_ids, str) else list(subject_ids)
        for subject_id in ids:
            check_id(subject_id, "subject_id", "consent")
        if not ids:
            raise VaultError("no subject given")
        check_label(notice_version, "notice_version", required=granted)
        check_label(source, "source", required=True)
        now, created = utc_now(), 0
        with self._operation(access.CONSENT, "subjects", purpose) as session:
            if session.get(PurposeRow, purpose) is None:
                declared = ", ".join(session.scalars(select(PurposeRow.name).order_by(PurposeRow.name)))
                raise VaultError(f"purpose {purpose!r} is not declared; declared: {declared}")
            sealing = SealingKeys(session, self._kek, self._kek_id)
            refs, returning = [], []
            for subject_id in dict.fromkeys(ids):
                ref = self.subject_ref(subject_id)
                subject_pk = session.scalar(select(SubjectRow.id).where(SubjectRow.ref == ref))
                tombstone = session.get(TombstoneRow, ref)
                active_tombstone = tombstone is not None and tombstone.lifted_at is None
                if subject_pk is None or active_tombstone:
                    if not granted:
                        state = "was deleted" if active_tombstone else "is not in the vault"
                        raise VaultError(f"subject {subject_id!r} {state}; nothing to withdraw")
                    if active_tombstone:
                        tombstone.lifted_at = now  # the subject consents again: they may come back
                        purge_subject(session, subject_pk)
                        returning.append(ref)
                    subject_pk = next(iter(add_subjects(session, [ref], sealing)))
                    created += 1
                session.add(ConsentEventRow(subject_pk=subject_pk, purpose=purpose, granted=granted, at=now,
                                            notice_version=notice_version, source=source))
                state = session.get(ConsentStateRow, (subject_pk, purpose))
                if state is None:
                    session.add(ConsentStateRow(subject_pk=subject_pk, purpose=purpose, granted=granted,
                                                updated_at=now))
                else:
                    state.granted, state.updated_at = granted, now
                refs.append(ref)
            sealing.save()
            audit.append(session, actor=self.principal, action=CONSENT_GRANT if granted else CONSENT_WITHDRAW,
                         resource="subjects", purpose=purpose,
                         details={"subjects": refs, "notice_version": notice_version, "source": source,
                                  "new_subjects": created,
                                  **({"returning_subjects": returning} if returning else {})})
        self._maybe_checkpoint()
        return created

    def consents(self, subject_id: str) -> dict[str, bool]:
        """The subject's current consent per purpose (purposes never answered are absent)."""
        ref = self.subject_ref(check_id(subject_id, "subject_id", "consents"))
        with self._operation(access.CONSENT, f"subject:{ref}") as session:
            subject = live_subject(session, subject_id, ref)
            rows = session.scalars(select(ConsentStateRow).where(ConsentStateRow.subject_pk == subject.id))
            return {row.purpose: row.granted for row in rows}


def check_purpose_name(name: str) -> str:
    if not isinstance(name, str) or not _PURPOSE_NAME.fullmatch(name):
        raise VaultError(f"purpose name {name!r} must be 1 to 64 of a-z 0-9 -, e.g. model-training")
    return name


def check_label(value: str, field_name: str, *, required: bool) -> None:
    if not isinstance(value, str) or len(value) > 64 or (required and not value.strip()):
        raise VaultError(f"{field_name} must be text of 1 to 64 characters, got {value!r}")
