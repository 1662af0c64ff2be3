"""A separate process that ingests one batch into a vault; the fault tests start it, race it or kill it.

Usage: python ingest_worker.py DB_URL KEY_HEX PREFIX COUNT [PAUSE_AFTER MARKER]

Records are synthetic (seed 1, so two workers share subjects), renamed ``PREFIX-i``. With
PAUSE_AFTER, the worker writes MARKER after sealing that many payloads, inside the ingest
transaction, and then waits to be killed.
"""

import dataclasses
import sys
import time
from pathlib import Path

from simmim.data import synthetic
from simmim.errors import VaultError
from simmim.vault import KeySource, Vault, envelope


def main() -> int:
    url, key_hex, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if len(sys.argv) > 5:
        pause_after, marker = int(sys.argv[5]), Path(sys.argv[6])
        seal, sealed = envelope.seal_payload, [0]

        def seal_then_stall(*args, **kwargs):
            sealed[0] += 1
            if sealed[0] == pause_after:
                marker.write_text("in the middle of the batch")
                time.sleep(120)
            return seal(*args, **kwargs)

        envelope.seal_payload = seal_then_stall
    records = [dataclasses.replace(r, record_id=f"{prefix}-{i}") for i, r in
               enumerate(synthetic.generate(count, seed=1))]
    try:
        with Vault.open(url, KeySource.key(bytes.fromhex(key_hex)), principal="admin") as vault:
            report = vault.ingest(records)
    except VaultError as exc:
        print(f"refused: {exc}")
        return 3
    print(f"ingested {report.records}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
