"""The key-release policy: which attested workloads may receive the vault's key.

A policy is a TOML file (reference: ``docs/tee.md``)::

    version = 1
    allow = ["aws-nitro", "amd-sev-snp"]     # TEE types that may receive the key
    debug = "forbid"                         # "forbid" (default) or "allow" (never in production)
    nonce_ttl_seconds = 300                  # how long a challenge nonce stays usable
    max_evidence_age_seconds = 300           # evidence that carries its own time (Nitro) must be this fresh

    [aws-nitro]
    pcr0 = ["<96 hex>"]                      # every listed register must equal one of its values
    pcr1 = ["<96 hex>"]
    pcr2 = ["<96 hex>"]

    [amd-sev-snp]
    measurement = ["<96 hex>"]
    min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }

    [intel-sgx]
    mrenclave = ["<64 hex>"]                 # and/or mrsigner
    min_isv_svn = 1
    tcb_status = ["UpToDate"]                # DCAP statuses accepted (default: UpToDate only)
    deny_advisories = ["INTEL-SA-00615"]
    max_collateral_age_days = 30

    [intel-tdx]
    mrtd = ["<96 hex>"]                      # and rtmr0..rtmr3, mrseam, mrconfigid
    tcb_status = ["UpToDate"]

Every allowed TEE needs its section with at least one measurement allow-list: a policy that would accept
any code is refused when loaded. `Policy.evaluate` returns every reason the claims fail, empty when they pass.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from simmim.tee.claims import NITRO, SEV_SNP, SGX, TDX, TEE_TYPES, Claims, PolicyError
from simmim.tee.snp import TCB_COMPONENTS

DCAP_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                 "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked")
# Allow-listable measurements per TEE and their length in hex digits.
MEASUREMENTS: dict[str, dict[str, int]] = {
    NITRO: {f"pcr{i}": 96 for i in range(32)},
    SEV_SNP: {"measurement": 96, "host_data": 64},
    SGX: {"mrenclave": 64, "mrsigner": 64},
    TDX: {"mrtd": 96, "rtmr0": 96, "rtmr1": 96, "rtmr2": 96, "rtmr3": 96, "mrseam": 96, "mrconfigid": 96},
}
_TOP_LEVEL = {"version", "allow", "debug", "nonce_ttl_seconds", "max_evidence_age_seconds", *TEE_TYPES}
_DCAP_RULES = {"min_isv_svn", "tcb_status", "deny_advisories", "max_collateral_age_days"}
_EXTRA_RULES = {NITRO: set(), SEV_SNP: {"min_tcb"}, SGX: _DCAP_RULES, TDX: _DCAP_RULES - {"min_isv_svn"}}


@dataclass(frozen=True)
class TeeRules:
    """The rules for one TEE type."""

    measurements: dict[str, frozenset[str]]
    min_tcb: dict[str, int] = field(default_factory=dict)
    min_isv_svn: int | None = None
    tcb_status: frozenset[str] = frozenset({"UpToDate"})
    deny_advisories: frozenset[str] = frozenset()
    max_collateral_age_days: float | None = None


@dataclass(frozen=True)
class Policy:
    """A parsed, validated key-release policy; ``digest`` names its exact content (it goes into the audit
    log and is bound into every key it releases)."""

    rules: dict[str, TeeRules]
    debug_allowed: bool = False
    nonce_ttl_seconds: float = 300.0
    max_evidence_age_seconds: float = 300.0
    source: str = "(inline)"

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PolicyError(f"cannot read the policy {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "(inline)") -> Policy:
        def fail(message: str) -> PolicyError:
            return PolicyError(f"policy {source}: {message}")

        unknown = set(data) - _TOP_LEVEL
        if unknown:
            raise fail(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL)}")
        if data.get("version", 1) != 1:
            raise fail(f"version must be 1, got {data.get('version')!r}")
        allow = data.get("allow")
        if not isinstance(allow, list) or not allow or not set(allow) <= set(TEE_TYPES):
            raise fail(f"allow must be a non-empty list of {list(TEE_TYPES)}, got {allow!r}")
        debug = data.get("debug", "forbid")
        if debug not in ("forbid", "allow"):
            raise fail(f"debug must be \"forbid\" or \"allow\", got {debug!r}")
        rules = {tee: _tee_rules(tee, data.get(tee), fail) for tee in allow}
        for tee in set(TEE_TYPES) - set(allow):
            if tee in data:
                raise fail(f"section [{tee}] is given but {tee} is not in allow")
        return cls(rules=rules, debug_allowed=debug == "allow",
                   nonce_ttl_seconds=_positive(data.get("nonce_ttl_seconds", 300), "nonce_ttl_seconds", fail),
                   max_evidence_age_seconds=_positive(data.get("max_evidence_age_seconds", 300),
                                                      "max_evidence_age_seconds", fail),
                   source=source)

    def canonical(self) -> dict:
        """The policy as plain, sorted data (what ``digest`` hashes)."""
        return {"version": 1, "debug": "allow" if self.debug_allowed else "forbid",
                "nonce_ttl_seconds": self.nonce_ttl_seconds, "max_evidence_age_seconds": self.max_evidence_age_seconds,
                "rules": {tee: {"measurements": {k: sorted(v) for k, v in sorted(r.measurements.items())},
                                "min_tcb": dict(sorted(r.min_tcb.items())), "min_isv_svn": r.min_isv_svn,
                                "tcb_status": sorted(r.tcb_status), "deny_advisories": sorted(r.deny_advisories),
                                "max_collateral_age_days": r.max_collateral_age_days}
                          for tee, r in sorted(self.rules.items())}}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def evaluate(self, claims: Claims, now: datetime) -> list[str]:
        """Every reason ``claims`` fail this policy at ``now``; an empty list means they pass."""
        rules = self.rules.get(claims.tee)
        if rules is None:
            return [f"TEE type {claims.tee} is not allowed (allowed: {', '.join(sorted(self.rules))})"]
        reasons = []
        if claims.debug and not self.debug_allowed:
            reasons.append(f"{claims.tee} evidence is from a debug-mode workload; the policy forbids debug")
        for name, allowed in sorted(rules.measurements.items()):
            value = claims.measurements.get(name)
            if value not in allowed:
                reasons.append(f"{name} {value or '(absent)'} is not in the policy's allow-list")
        for component, minimum in sorted(rules.min_tcb.items()):
            level = claims.tcb.get(component)
            if not isinstance(level, int) or level < minimum:
                reasons.append(f"TCB {component} level {level} is below the minimum {minimum}")
        if claims.tee in (SGX, TDX):
            reasons += _dcap_reasons(rules, claims, now)
        if claims.issued_at is not None:
            age = (now - claims.issued_at).total_seconds()
            if age > self.max_evidence_age_seconds:
                reasons.append(f"the evidence is {age:.0f} s old; the policy accepts at most "
                               f"{self.max_evidence_age_seconds:.0f} s")
        return reasons


def _dcap_reasons(rules: TeeRules, claims: Claims, now: datetime) -> list[str]:
    reasons = []
    status = claims.tcb.get("status")
    if status not in rules.tcb_status:
        reasons.append(f"TCB status {status} is not accepted (accepted: {', '.join(sorted(rules.tcb_status))})")
    denied = sorted(set(claims.tcb.get("advisory_ids", ())) & rules.deny_advisories)
    if denied:
        reasons.append(f"the platform is affected by denied advisories {', '.join(denied)}")
    if rules.min_isv_svn is not None and int(claims.tcb.get("isv_svn", -1)) < rules.min_isv_svn:
        reasons.append(f"ISV SVN {claims.tcb.get('isv_svn')} is below the minimum {rules.min_isv_svn}")
    if rules.max_collateral_age_days is not None and claims.collateral_issued_at is not None:
        age_days = (now - claims.collateral_issued_at).total_seconds() / 86400
        if age_days > rules.max_collateral_age_days:
            reasons.append(f"the TCB collateral is {age_days:.1f} days old; the policy accepts at most "
                           f"{rules.max_collateral_age_days:g}")
    return reasons


def _positive(value, name: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise fail(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _tee_rules(tee: str, section, fail) -> TeeRules:
    if not isinstance(section, dict):
        raise fail(f"{tee} is allowed but has no [{tee}] section with a measurement allow-list")
    known = set(MEASUREMENTS[tee]) | _EXTRA_RULES[tee]
    unknown = set(section) - known
    if unknown:
        raise fail(f"[{tee}] has unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
    measurements = {}
    for name, length in MEASUREMENTS[tee].items():
        if name not in section:
            continue
        values = section[name]
        if not isinstance(values, list) or not values:
            raise fail(f"[{tee}] {name} must be a non-empty list of hex strings")
        normalised = set()
        for value in values:
            text = value.lower() if isinstance(value, str) else ""
            if len(text) != length or any(c not in "0123456789abcdef" for c in text):
                raise fail(f"[{tee}] {name}: {value!r} is not {length} hex digits")
            normalised.add(text)
        measurements[name] = frozenset(normalised)
    if not measurements:
        names = "pcr0..pcr31" if tee == NITRO else ", ".join(MEASUREMENTS[tee])
        raise fail(f"[{tee}] needs at least one measurement allow-list ({names}): without one any code would get "
                   f"the key")
    min_tcb = section.get("min_tcb", {})
    if not isinstance(min_tcb, dict) or not set(min_tcb) <= set(TCB_COMPONENTS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in min_tcb.values()):
        raise fail(f"[{tee}] min_tcb must map {sorted(TCB_COMPONENTS)} to levels 0-255, got {min_tcb!r}")
    status = section.get("tcb_status", ["UpToDate"])
    if not isinstance(status, list) or not status or not set(status) <= set(DCAP_STATUSES):
        raise fail(f"[{tee}] tcb_status must be a non-empty list of {list(DCAP_STATUSES)}")
    advisories = section.get("deny_advisories", [])
    if not isinstance(advisories, list) or not all(isinstance(a, str) for a in advisories):
        raise fail(f"[{tee}] deny_advisories must be a list of advisory ids")
    min_svn = section.get("min_isv_svn")
    if min_svn is not None and (not isinstance(min_svn, int) or isinstance(min_svn, bool) or min_svn < 0):
        raise fail(f"[{tee}] min_isv_svn must be a non-negative integer")
    max_age = section.get("max_collateral_age_days")
    return TeeRules(measurements=measurements, min_tcb=dict(min_tcb), min_isv_svn=min_svn,
                    tcb_status=frozenset(status), deny_advisories=frozenset(advisories),
                    max_collateral_age_days=None if max_age is None else _positive(
                        max_age, f"[{tee}] max_collateral_age_days", fail))
