"""Intel SGX and TDX DCAP quotes, verified offline through the optional `dcap-qvl` package
(``pip install 'simmim[dcap]'``; imported only when a quote is verified).

`dcap_qvl.verify(quote, collateral, now)` checks the PCK chain to Intel's SGX root CA and its CRLs, the
quote and QE report signatures, the QE identity and the TCB info (signed by Intel), and derives the TCB
status and advisories for the platform. The collateral (PCK CRL, TCB info, QE identity and their issuer
chains) is the caller's: with no network here it is a frozen copy, so ``status`` is as of its issue date.

This module reads the verified report: MRENCLAVE/MRSIGNER, ISV product id and SVN and ATTRIBUTES.DEBUG
(SGX); MRTD, RTMR0-3, MRSEAM and TD_ATTRIBUTES.DEBUG (TDX); ``report_data``; and takes the validity window
from the collateral (issue date to the earliest ``nextUpdate``).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from datetime import datetime

from simmim.tee.claims import SGX, TDX, AttestationError, Claims, parse_time, utc

FORMAT = "dcap"
SGX_ATTRIBUTES_DEBUG = 0x02  # bit 1 of the first ATTRIBUTES byte
TDX_ATTRIBUTES_DEBUG = 0x01  # bit 0 of TD_ATTRIBUTES


@dataclass(frozen=True)
class DcapEvidence:
    """A quote and its collateral (the JSON that `dcap-qvl` and Intel's PCS return)."""

    quote: bytes
    collateral: str


def _dcap_qvl():
    try:
        return importlib.import_module("dcap_qvl")
    except ImportError:
        raise AttestationError("dcap: verifying SGX/TDX quotes needs the optional package dcap-qvl; "
                               "install it with pip install 'simmim[dcap]'") from None


def _collateral_window(collateral: dict) -> tuple[datetime, datetime, datetime]:
    """(latest issue date, earliest next update) over the TCB info and QE identity, and the TCB info's issue date."""
    issued, next_updates = [], []
    try:
        for name in ("tcb_info", "qe_identity"):
            body = json.loads(collateral[name])
            issued.append(parse_time(body["issueDate"]))
            next_updates.append(parse_time(body["nextUpdate"]))
    except (KeyError, TypeError, ValueError, AttestationError) as exc:
        raise AttestationError(f"dcap: the collateral's {name} has no readable issueDate/nextUpdate ({exc})") from None
    return max(issued), min(next_updates), issued[0]


class DcapVerifier:
    """Verifies SGX and TDX quotes with `dcap-qvl`.

    Args:
        root_ca_der: Intel's SGX root CA (DER) to trust. Default: the one built into `dcap-qvl`. Tests give
            another root here to see a wrong root refused.
    """

    tee_format = FORMAT

    def __init__(self, root_ca_der: bytes | None = None) -> None:
        self.root_ca_der = root_ca_der

    def verify(self, evidence: DcapEvidence, *, now: datetime) -> Claims:
        """Claims of a quote verified at ``now``.

        Raises:
            AttestationError: Naming the failed check (the message of `dcap-qvl`), or if it is not installed.
        """
        now = utc(now)
        qvl = _dcap_qvl()
        try:
            raw_collateral = json.loads(evidence.collateral)
            collateral = qvl.QuoteCollateralV3.from_json(evidence.collateral)
        except (ValueError, TypeError) as exc:
            raise AttestationError(f"dcap: the collateral is not valid collateral JSON ({' '.join(str(exc).split())})"
                                   ) from None
        try:
            if self.root_ca_der is None:
                verified = qvl.verify(evidence.quote, collateral, int(now.timestamp()))
            else:
                verified = qvl.verify_with_root_ca(evidence.quote, collateral, self.root_ca_der, int(now.timestamp()))
            result = json.loads(verified.to_json())
        except (ValueError, TypeError, RuntimeError) as exc:
            reason = " ".join(str(exc).split())  # dcap-qvl's messages span lines; ours are one line
            raise AttestationError(f"dcap: the quote does not verify: {reason}") from None
        not_before, not_after, tcb_issued = _collateral_window(raw_collateral)
        if not not_before <= now <= not_after:
            raise AttestationError(f"dcap: the collateral is not valid at {now.isoformat()} (valid "
                                   f"{not_before.isoformat()} to {not_after.isoformat()})")
        tcb = {"status": result["status"], "advisory_ids": list(result.get("advisory_ids", []))}
        report = result["report"]
        if "SgxEnclave" in report:
            body = report["SgxEnclave"]
            attributes = bytes.fromhex(body["attributes"])
            tcb["isv_svn"] = body["isv_svn"]
            return Claims(tee=SGX, measurements={"mrenclave": body["mr_enclave"], "mrsigner": body["mr_signer"]},
                          debug=bool(attributes[0] & SGX_ATTRIBUTES_DEBUG), tcb=tcb,
                          report_data=bytes.fromhex(body["report_data"]), not_before=not_before,
                          not_after=not_after, verified_at=now, collateral_issued_at=tcb_issued,
                          details={"isv_prod_id": body["isv_prod_id"], "ppid": result.get("ppid")})
        kind = next((name for name in ("TD10", "TD15") if name in report), None)
        if kind is None:
            raise AttestationError(f"dcap: unsupported report kind {sorted(report)}")
        body = report[kind]
        body = body.get("base", body)  # TD 1.5 reports nest the 1.0 fields
        attributes = bytes.fromhex(body["td_attributes"])
        measurements = {"mrtd": body["mr_td"], **{f"rtmr{i}": body[f"rt_mr{i}"] for i in range(4)},
                        "mrseam": body["mr_seam"], "mrconfigid": body["mr_config_id"]}
        return Claims(tee=TDX, measurements=measurements, debug=bool(attributes[0] & TDX_ATTRIBUTES_DEBUG), tcb=tcb,
                      report_data=bytes.fromhex(body["report_data"]), not_before=not_before, not_after=not_after,
                      verified_at=now, collateral_issued_at=tcb_issued,
                      details={"tee_tcb_svn": body["tee_tcb_svn"], "ppid": result.get("ppid")})
