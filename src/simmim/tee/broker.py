"""Attestation-gated key release: the vault's key goes only to a workload that proves, by hardware
attestation, that it runs allowed code in a non-debug TEE, and only wrapped to a key that workload holds.

Protocol (one round trip after the challenge; docs/tee.md has the full description)::

    broker                                               workload (inside the TEE)
      challenge() -> nonce (32 random bytes, single use, TTL from the policy)  ->
                                                          makes an X25519 key pair (sk, pk);
                                                          report_data = SHA-512("simmim-kek-v1" || nonce || pk)
      <- release(format, evidence, pk, nonce)             (Nitro: also nonce and public_key = pk in the document)
      1. consume the nonce (unknown, used or expired: refused; it is burnt either way)
      2. verify the evidence (signatures, chain to the pinned root, at now)
      3. binding: report_data == SHA-512(tag || nonce || pk) (Nitro: also its nonce and public_key fields)
      4. policy: TEE type, measurements, debug, TCB, collateral and evidence age
      5. KEK <- vault (authorised and logged there); HPKE-seal it to pk   ->  open_grant(grant, sk) -> KEK

Every decision, granted or refused, is one entry in the vault's audit log (action ``tee-key-release``) with
the TEE type, measurements, policy digest, a nonce id and, for refusals, the reason. HPKE (RFC 9180) is
base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM; its ``info`` binds the vault id,
the policy digest and the nonce, so a grant cannot be replayed into another context.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from simmim.errors import SimMIMError
from simmim.tee.claims import NITRO, AttestationError, Claims, KeyReleaseRefused, Verifier, utc
from simmim.tee.nonces import NONCE_BYTES, NonceStore
from simmim.tee.policy import Policy

if TYPE_CHECKING:
    from simmim.vault import Vault

DOMAIN_TAG = b"simmim-kek-v1"
PUBLIC_KEY_BYTES = 32  # raw X25519
HPKE_SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
AUDIT_ACTION = "tee-key-release"


def _suite() -> hpke.Suite:
    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def binding(nonce: bytes, public_key: bytes) -> bytes:
    """The 64 bytes a workload puts in its report data: SHA-512(domain tag || nonce || public key).
    Both inputs have fixed lengths, so the concatenation is unambiguous."""
    if len(nonce) != NONCE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        raise AttestationError(f"binding needs a {NONCE_BYTES}-byte nonce and a {PUBLIC_KEY_BYTES}-byte X25519 key")
    return hashlib.sha512(DOMAIN_TAG + nonce + public_key).digest()


def hpke_info(vault_id: str, policy_digest: str, nonce: bytes) -> bytes:
    return b"|".join([DOMAIN_TAG, vault_id.encode(), policy_digest.encode(), nonce.hex().encode()])


@dataclass(frozen=True)
class KeyGrant:
    """A released key: ``sealed`` is the HPKE ciphertext (encapsulated key || AES-GCM ciphertext) of the KEK
    to the workload's public key; the other fields rebuild HPKE's ``info``."""

    vault_id: str
    policy_digest: str
    nonce: bytes
    sealed: bytes
    suite: str = HPKE_SUITE_NAME

    def to_json(self) -> str:
        return json.dumps({"vault_id": self.vault_id, "policy_digest": self.policy_digest, "nonce": self.nonce.hex(),
                           "sealed": self.sealed.hex(), "suite": self.suite})

    @classmethod
    def from_json(cls, text: str) -> KeyGrant:
        try:
            data = json.loads(text)
            grant = cls(vault_id=data["vault_id"], policy_digest=data["policy_digest"],
                        nonce=bytes.fromhex(data["nonce"]), sealed=bytes.fromhex(data["sealed"]), suite=data["suite"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AttestationError(f"not a key grant: {exc}") from None
        if grant.suite != HPKE_SUITE_NAME:
            raise AttestationError(f"key grant sealed with {grant.suite}; expected {HPKE_SUITE_NAME}")
        return grant


def open_grant(grant: KeyGrant, private_key: X25519PrivateKey) -> bytes:
    """The KEK inside a grant, for the workload holding the private key.

    Raises:
        AttestationError: If the grant was not sealed to this key or was altered.
    """
    try:
        return _suite().decrypt(grant.sealed, private_key, info=hpke_info(grant.vault_id, grant.policy_digest,
                                                                          grant.nonce))
    except Exception as exc:  # cryptography raises InvalidTag or ValueError, depending on what is wrong
        raise AttestationError(f"the key grant does not open with this private key ({type(exc).__name__})") from None


def default_verifiers() -> dict[str, Verifier]:
    """Verifiers with the production roots (AWS and AMD pinned in code; Intel's inside dcap-qvl)."""
    from simmim.tee.dcap import DcapVerifier
    from simmim.tee.nitro import NitroVerifier
    from simmim.tee.snp import SnpVerifier

    return {"nitro": NitroVerifier(), "snp": SnpVerifier(), "dcap": DcapVerifier()}


class KeyBroker:
    """Releases an open vault's KEK to attested workloads under a policy.

    Args:
        vault: The open vault, acting as a principal with the key-management right.
        policy: The key-release policy.
        nonces: Where nonces are kept (survives restarts).
        verifiers: Evidence format -> verifier. Default: `default_verifiers()`. Tests pass verifiers with
            their own test roots here; no other way changes a root.
        clock: Returns the current time; tests fix it.
    """

    def __init__(self, vault: Vault, policy: Policy, nonces: NonceStore, *,
                 verifiers: Mapping[str, Verifier] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.vault, self.policy, self.nonces = vault, policy, nonces
        self.verifiers = dict(verifiers) if verifiers is not None else default_verifiers()
        self.clock = clock

    def challenge(self) -> bytes:
        """A fresh single-use nonce, valid for the policy's ``nonce_ttl_seconds``."""
        return self.nonces.issue(utc(self.clock()), self.policy.nonce_ttl_seconds)

    def release(self, evidence_format: str, evidence, public_key: bytes, nonce: bytes) -> KeyGrant:
        """Verifies the evidence and, if the policy accepts it, returns the KEK sealed to ``public_key``.

        Raises:
            KeyReleaseRefused: With the reason; the refusal is in the audit log.
        """
        now = utc(self.clock())
        context = {"format": evidence_format, "policy": self.policy.digest,
                   "nonce_id": hashlib.sha256(nonce).hexdigest()[:16]}
        reason = self.nonces.consume(nonce, now)
        if reason is not None:
            self._refuse(reason, context)
        verifier = self.verifiers.get(evidence_format)
        if verifier is None:
            self._refuse(f"no verifier for evidence format {evidence_format!r} "
                         f"(known: {', '.join(sorted(self.verifiers))})", context)
        try:
            claims = verifier.verify(evidence, now=now)
        except AttestationError as exc:
            self._refuse(f"evidence rejected: {exc}", context)
        context.update(tee=claims.tee, debug=claims.debug, measurements=dict(claims.measurements))
        reason = self._binding_problem(claims, nonce, public_key)
        if reason is not None:
            self._refuse(reason, context)
        reasons = self.policy.evaluate(claims, now)
        if reasons:
            self._refuse("; ".join(reasons), context)
        recipient = f"workload:{hashlib.sha256(public_key).hexdigest()[:16]}"
        try:
            kek = self.vault.kek_for_attested_release(recipient, {**context, "reason": "attestation accepted"})
        except SimMIMError as exc:
            raise KeyReleaseRefused(f"key release refused by the vault: {exc}") from None
        sealed = _suite().encrypt(kek, X25519PublicKey.from_public_bytes(public_key),
                                  info=hpke_info(self.vault.vault_id, self.policy.digest, nonce))
        return KeyGrant(vault_id=self.vault.vault_id, policy_digest=self.policy.digest, nonce=nonce, sealed=sealed)

    def _binding_problem(self, claims: Claims, nonce: bytes, public_key: bytes) -> str | None:
        if len(public_key) != PUBLIC_KEY_BYTES:
            return f"the workload key must be a raw {PUBLIC_KEY_BYTES}-byte X25519 public key"
        try:  # a trial seal also rejects low-order points, before anything is released or logged as granted
            _suite().encrypt(b"", X25519PublicKey.from_public_bytes(public_key), info=b"simmim-key-check")
        except ValueError:
            return "the workload key is not a usable X25519 public key"
        if claims.report_data != binding(nonce, public_key):
            return ("report data does not bind this nonce and public key: expected "
                    "SHA-512(\"simmim-kek-v1\" || nonce || public key)")
        if claims.tee == NITRO:
            if claims.nonce is not None and claims.nonce != nonce:
                return "the Nitro document's nonce is not the challenge nonce"
            if claims.public_key is not None and claims.public_key != public_key:
                return "the Nitro document's public_key is not the workload key"
        return None

    def _refuse(self, reason: str, context: dict) -> NoReturn:
        self.vault.record_event(AUDIT_ACTION, "workload", outcome="denied", details={**context, "reason": reason})
        raise KeyReleaseRefused(f"key release refused: {reason}")
