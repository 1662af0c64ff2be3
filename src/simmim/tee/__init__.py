"""Trusted execution, from the relying party's side: verify hardware attestation evidence offline and release
the vault's key only to workloads whose attestation a policy accepts.

* `claims`: the normalised `Claims` every verifier returns, and this package's errors;
* `nitro`, `snp`, `dcap`: verifiers for AWS Nitro Enclaves, AMD SEV-SNP and Intel SGX/TDX (through the
  optional `dcap-qvl`), each with pinned roots and an explicit ``now``;
* `policy`: the key-release policy file; `nonces`: single-use challenge nonces in a database;
* `broker`: the key-release protocol (binding, HPKE sealing, audit); `attester`: the workload's side in a
  Gramine enclave (not run here);
* `commands`: ``simmim tee verify`` and ``simmim tee policy check``.

What is and is not verified here: docs/tee.md.
"""

from simmim.tee.broker import KeyBroker, KeyGrant, binding, open_grant
from simmim.tee.claims import (
    NITRO,
    SEV_SNP,
    SGX,
    TDX,
    TEE_TYPES,
    AttestationError,
    Claims,
    KeyReleaseRefused,
    PolicyError,
    Verifier,
)
from simmim.tee.dcap import DcapEvidence, DcapVerifier
from simmim.tee.nitro import NitroVerifier
from simmim.tee.nonces import NonceStore
from simmim.tee.policy import Policy
from simmim.tee.snp import SnpEvidence, SnpVerifier

__all__ = [
    "NITRO", "SEV_SNP", "SGX", "TDX", "TEE_TYPES", "AttestationError", "Claims", "DcapEvidence", "DcapVerifier",
    "KeyBroker", "KeyGrant", "KeyReleaseRefused", "NitroVerifier", "NonceStore", "Policy", "PolicyError",
    "SnpEvidence", "SnpVerifier", "Verifier", "binding", "open_grant",
]
