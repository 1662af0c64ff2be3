"""Vault cost: encrypted ingest and release against the same bytes stored unencrypted, and deletion time.

    python benchmarks/vault.py [--records 2000] [--batch 500] [--image-size 32] [--rounds 3]
                               [--big-subject 10000] [--deletions 3] [--db URL] [--json]

Ingest and release, three variants, each on its own database of the same kind (a SQLite file in a
temporary folder by default, or new databases on the PostgreSQL server of ``--db``):

  vault       `Vault.ingest` / `Vault.release("model-training")`: validation, encoding, pseudonyms,
              AES-256-GCM under per-subject keys, audit entries, access decisions, snapshot.
  vault-nocrypt  the same vault code with sealing and opening replaced by the identity (plaintext
              stored in the payload column): the cost of encryption alone.
  plain       the bare baseline the issue names: the same encoded payload bytes inserted unencrypted
              into a table with the same columns, one transaction per batch; release selects them and
              decodes the records. No validation of ids, no pseudonyms, no audit, no access control.

The rate is records per second, median over --rounds rounds run round-robin (fresh record ids each
round), so each ratio compares runs that saw the same machine load. Goal: vault ingest rate at
least 0.5x plain.

Deletion: --deletions subjects with 10 records and as many with --big-subject records, deleted
alternately (medians reported); `delete_subject` reports
the shred time (the transaction that destroys the data key and writes the tombstone, after which
the data is unreadable) and the total time (the rows removed as well). Goal: shred time independent
of the subject's size.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, String, Table, select

from simmim.data import synthetic
from simmim.data.records import Record
from simmim.vault import KeySource, Vault, envelope
from simmim.vault.database import make_engine, parse_url, transaction
from simmim.vault.payloads import decode_record, encode_record

PURPOSE = "model-training"


def _records(n: int, image_size: int, prefix: str, subject_prefix: str | None = None) -> list[Record]:
    records = synthetic.generate(n, seed=7, image_size=image_size)
    return [dataclasses.replace(r, record_id=f"{prefix}-{i}",
                                subject_id=r.subject_id if subject_prefix is None else f"{subject_prefix}")
            for i, r in enumerate(records)]


class _Databases:
    """New, empty databases of one kind: SQLite files in a temporary folder, or PostgreSQL databases."""

    def __init__(self, server: str | None, folder: Path) -> None:
        self.server, self.folder, self.created = server, folder, []

    def new(self, name: str) -> str:
        if self.server is None:
            return f"sqlite:///{self.folder / (name + '.db')}"
        import psycopg

        database = f"bench_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        self.created.append(database)
        return f"{self.server}/{database}"

    def drop_all(self) -> None:
        if self.server is None:
            return
        import psycopg

        with psycopg.connect(self.server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
            for database in self.created:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@contextlib.contextmanager
def _without_encryption():
    """Sealing and opening as the identity: the vault stores and reads the plaintext payload."""
    seal, open_ = envelope.seal_payload, envelope.open_payload
    envelope.seal_payload = lambda key, plaintext, **kw: plaintext
    envelope.open_payload = lambda key, payload, **kw: payload
    try:
        yield
    finally:
        envelope.seal_payload, envelope.open_payload = seal, open_


def _plain_table(metadata: MetaData) -> Table:
    return Table("bench_plain_records", metadata,
                 Column("id", Integer, primary_key=True, autoincrement=True), Column("ref", String(64), unique=True),
                 Column("subject", String(200), index=True), Column("kind", String(16)),
                 Column("plaintext_bytes", BigInteger), Column("payload", LargeBinary))


class _Plain:
    """The bare baseline: encoded payloads in a table, no crypto, no vault."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(parse_url(url))
        self.table = _plain_table(MetaData())
        self.table.metadata.create_all(self.engine)

    def ingest(self, records: list[Record]) -> None:
        rows = []
        for record in records:
            kind, payload = encode_record(record, max_bytes=1 << 30)
            rows.append({"ref": record.record_id, "subject": record.subject_id, "kind": kind,
                         "plaintext_bytes": len(payload), "payload": payload})
        with transaction(self.engine) as session:
            session.execute(self.table.insert(), rows)

    def release(self) -> list[Record]:
        with transaction(self.engine) as session:
            rows = session.execute(select(self.table.c.ref, self.table.c.payload).order_by(self.table.c.ref)).all()
        return [decode_record(payload, ref) for ref, payload in rows]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_ingest_release(dbs: _Databases, args) -> dict:
    key = KeySource.key(bytes(32))
    secure = Vault.create(dbs.new("vault"), key)
    nocrypt = Vault.create(dbs.new("nocrypt"), key)
    plain = _Plain(dbs.new("plain"))
    subjects: set[str] = set()

    def in_batches(target, records):
        for start in range(0, len(records), args.batch):
            target.ingest(records[start:start + args.batch])

    variants = {
        "vault": lambda records: in_batches(secure, records),
        "vault-nocrypt": lambda records: _nocrypt(lambda: in_batches(nocrypt, records)),
        "plain": lambda records: in_batches(plain, records),
    }
    ingest_rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        records = _records(args.records, args.image_size, f"r{round_}")
        subjects.update(r.subject_id for r in records)
        for name, run in variants.items():
            started = time.perf_counter()
            run(records)
            ingest_rates[name].append(_rate(len(records), time.perf_counter() - started))
    for target in (secure, nocrypt):
        _nocrypt(lambda t=target: t.grant_consent(sorted(subjects), PURPOSE, notice_version="bench"))
    release_runs = {
        "vault": lambda: secure.release(PURPOSE).records,
        "vault-nocrypt": lambda: _nocrypt(lambda: nocrypt.release(PURPOSE).records),
        "plain": plain.release,
    }
    release_rates: dict[str, list[float]] = {name: [] for name in release_runs}
    total = args.records * args.rounds
    for _ in range(args.rounds):
        for name, run in release_runs.items():
            started = time.perf_counter()
            released = run()
            release_rates[name].append(_rate(len(released), time.perf_counter() - started))
            assert len(released) == total, (name, len(released), total)
    secure.close()
    nocrypt.close()
    plain.engine.dispose()
    ingest = {name: statistics.median(rates) for name, rates in ingest_rates.items()}
    release = {name: statistics.median(rates) for name, rates in release_rates.items()}
    return {"records_per_round": args.records, "batch": args.batch, "image_size": args.image_size,
            "payload_bytes": len(encode_record(_records(1, args.image_size, "x")[0], max_bytes=1 << 30)[1]),
            "ingest_records_per_s": ingest, "release_records_per_s": release,
            "ingest_ratio_vault_vs_plain": ingest["vault"] / ingest["plain"],
            "ingest_ratio_vault_vs_nocrypt": ingest["vault"] / ingest["vault-nocrypt"],
            "release_ratio_vault_vs_plain": release["vault"] / release["plain"],
            "release_ratio_vault_vs_nocrypt": release["vault"] / release["vault-nocrypt"]}


def _nocrypt(run):
    with _without_encryption():
        return run()


def bench_deletion(dbs: _Databases, args) -> dict:
    """Median shred and total time over --deletions subjects of each size, deleted alternately."""
    vault = Vault.create(dbs.new("deletion"), KeySource.key(bytes(32)))
    sizes = (10, args.big_subject)
    for size in sizes:
        for n in range(args.deletions):
            records = _records(size, args.image_size, f"del{size}-{n}", subject_prefix=f"person-{size}-{n}")
            for start in range(0, size, 2000):
                vault.ingest(records[start:start + 2000])
    times: dict[int, list] = {size: [] for size in sizes}
    for n in range(args.deletions):
        for size in sizes:
            report = vault.delete_subject(f"person-{size}-{n}")
            assert report.records_deleted == size
            times[size].append((report.shred_seconds, report.total_seconds))
    vault.close()
    return {size: {"shred_s": statistics.median(t[0] for t in runs), "total_s": statistics.median(t[1] for t in runs)}
            for size, runs in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records ingested per round and variant")
    parser.add_argument("--batch", type=int, default=500, help="records per ingest call")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-subject", type=int, default=10000)
    parser.add_argument("--deletions", type=int, default=3, help="subjects of each size deleted")
    parser.add_argument("--db", default=None, help="PostgreSQL server URL (postgresql+psycopg://user@host:port); "
                                                   "default: SQLite files in a temporary folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simmim-vault-bench-") as folder:
        dbs = _Databases(args.db, Path(folder))
        try:
            result = {"backend": "postgresql" if args.db else "sqlite",
                      "ingest_release": bench_ingest_release(dbs, args), "deletion": bench_deletion(dbs, args)}
        finally:
            dbs.drop_all()
    if args.json:
        print(json.dumps(result, indent=1))
        return
    rr = result["ingest_release"]
    print(f"backend {result['backend']}; {rr['records_per_round']} records x {args.rounds} rounds, batches of "
          f"{rr['batch']}, {rr['image_size']}x{rr['image_size']} images ({rr['payload_bytes']} B payload)")
    print(f"{'variant':<15}{'ingest rec/s':>14}{'release rec/s':>15}")
    for name in rr["ingest_records_per_s"]:
        print(f"{name:<15}{rr['ingest_records_per_s'][name]:>14.0f}{rr['release_records_per_s'][name]:>15.0f}")
    print(f"ingest  ratio vault/plain {rr['ingest_ratio_vault_vs_plain']:.2f} (goal >= 0.5), "
          f"vault/nocrypt {rr['ingest_ratio_vault_vs_nocrypt']:.2f}")
    print(f"release ratio vault/plain {rr['release_ratio_vault_vs_plain']:.2f}, "
          f"vault/nocrypt {rr['release_ratio_vault_vs_nocrypt']:.2f}")
    for size, times in result["deletion"].items():
        print(f"delete subject with {size:>6} records: shred {times['shred_s'] * 1000:7.1f} ms, "
              f"total {times['total_s'] * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
