"""Deleting a 1,000,001-row history on PostgreSQL: the delete's time, other jobs' chunk writes
while it runs, and whether the space comes back.

    python benchmarks/delete_space.py [--rows 1000001] [--writers 2] [--batches 1000,5000,20000,0]
                                      [--baseline-seconds 5] [--json]

On a fresh PostgreSQL database (``DESCENT_TEST_PG_URL``'s server), autovacuum off for ``history_chunks``
(every VACUUM is one this script runs):

**Space.** A ``--rows``-row history is written between two of half as many rows (so its pages lie
in the middle of the table, where only reuse, not VACUUM's truncation of the table's end, can take
them back), all through the store's write path as a worker writes (``save_chunk``, binary COPY).
``pg_total_relation_size('history_chunks')`` (heap, index, TOAST) is taken with it stored (after VACUUM
ANALYZE), right after ``service.store.deletion.delete_job`` (the default batches), after one plain
VACUUM, and after the same volume is written again: the growth must stay within 10%. Twice, on
fresh databases: with one VACUUM pass, and with two (a transaction between them, as any running
service commits all the time). PostgreSQL takes back the heap's space at the first pass; a B-tree
page that VACUUM deleted is put up for reuse only by a later pass, once the transaction ids of its
deletion are behind every snapshot, so one pass leaves the index to grow by the keys it lost.

**Chunk writes during the delete.** For each ``--batches`` size (rows per purge transaction; 0:
the whole history in one DELETE), a ``--rows``-row history is written, ``--writers`` threads each
write 100-row chunks for a job of their own through ``save_chunk`` (a transaction each, with the
lease renewal, as a worker does), one every 10 ms; their latencies are taken for
``--baseline-seconds`` with nothing else running, then while ``delete_job`` deletes the history.
The delete's time is reported against the time its history took to write (in the same run).
Latencies are the machine's (it drifts): read the during/before comparison, not the numbers alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from service.store import Database, HistoryRows  # noqa: E402
from service.store import deletion  # noqa: E402
from service.store import jobs as job_store  # noqa: E402
from service.store.history import save_chunk  # noqa: E402
from testkit.backends import PostgresUnreachable, migrated  # noqa: E402

SPEC = {"objective": "10 * (x ** 2).sum()", "x0": [8.0, 8.0], "steps": 1_000_000,
        "optimizer": {"name": "sgd", "lr": 0.001}, "record": {"x": True}}
PER_WRITE = 50_000
CHUNK = 100
PAUSE = 0.010
MIB = 1024 * 1024


def batch(first: int, n: int, rng: np.random.Generator) -> HistoryRows:
    return HistoryRows(steps=np.arange(first, first + n), f=rng.standard_normal(n) * 100,
                        grad_norm=np.abs(rng.standard_normal(n)), lr=np.full(n, 1e-3), x=rng.standard_normal((n, 2)))


def new_job(db: Database, worker: str) -> str:
    job_id = job_store.create_job(db, SPEC, [2], "cpu")[0].id
    assert job_store.claim_job(db, job_id, worker, 3600, 3) is not None
    return job_id


def write_history(db: Database, rows: int) -> tuple[str, float]:
    """A job holding ``rows`` rows written as a worker writes them; (its id, seconds taken)."""
    job_id, rng = new_job(db, "bench:big"), np.random.default_rng(0)
    began = time.perf_counter()
    for first in range(0, rows, PER_WRITE):
        save_chunk(db, job_id, "bench:big", batch(first, min(PER_WRITE, rows - first), rng), None, None, 3600)
    return job_id, time.perf_counter() - began


class Writers:
    """``n`` threads writing 100-row chunks for jobs of their own, each write timed."""

    def __init__(self, db: Database, n: int) -> None:
        self.db, self.stop = db, threading.Event()
        self.samples: list[tuple[float, float]] = []  # (when it began, seconds)
        self.jobs = [new_job(db, f"bench:w{i}") for i in range(n)]
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        rng, step, job_id, me = np.random.default_rng(i + 1), 0, self.jobs[i], f"bench:w{i}"
        while not self.stop.is_set():
            rows = batch(step, CHUNK, rng)
            began = time.perf_counter()
            save_chunk(self.db, job_id, me, rows, None, None, 3600)
            took = time.perf_counter() - began
            with self.lock:
                self.samples.append((began, took))
            step += CHUNK
            time.sleep(PAUSE)

    def start(self) -> "Writers":
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def between(self, lo: float, hi: float) -> list[float]:
        return [took for began, took in self.samples if lo <= began <= hi]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def size(db: Database) -> int:
    with db.session() as s:
        return int(s.connection().exec_driver_sql("SELECT pg_total_relation_size('history_chunks')").scalar())


def parts(db: Database) -> str:
    """The table's heap and index sizes, for the log."""
    with db.session() as s:
        heap, index = s.connection().exec_driver_sql(
            "SELECT pg_relation_size('history_chunks'), pg_indexes_size('history_chunks')").one()
    return f"heap {heap / MIB:.1f} + index {index / MIB:.1f} MiB"


def vacuum(db: Database, analyze: bool = False) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE history_chunks" if analyze else "VACUUM history_chunks")


def latency(db: Database, rows: int, writers: int, batch_rows: int, baseline_seconds: float) -> dict[str, Any]:
    """Chunk writes with nothing else running, then while a ``rows``-row history is deleted in
    transactions of ``batch_rows`` rows (0: one DELETE)."""
    big, wrote = write_history(db, rows)
    vacuum(db, analyze=True)
    pool = Writers(db, writers).start()
    time.sleep(1.0)  # warm: connections, the first statements
    lo = time.perf_counter()
    time.sleep(baseline_seconds)
    hi = time.perf_counter()
    began = time.perf_counter()
    removed = deletion.delete_job(db, big, batch_rows=batch_rows or 10 * rows)
    ended = time.perf_counter()
    took = ended - began
    time.sleep(0.2)
    pool.finish()
    assert removed.history_rows == rows, removed
    base, during = pool.between(lo, hi), pool.between(began, ended)
    for job_id in pool.jobs:
        deletion.delete_job(db, job_id)
    vacuum(db)
    result = {
        "batch_rows": batch_rows, "rows": rows, "write_s": wrote, "delete_s": took, "delete_vs_write": took / wrote,
        "baseline_p50_ms": pct(base, 50), "baseline_p99_ms": pct(base, 99), "baseline_n": len(base),
        "during_p50_ms": pct(during, 50), "during_p99_ms": pct(during, 99),
        "during_max_ms": max(during) * 1000 if during else float("nan"), "during_n": len(during),
    }
    print(f"[batch {batch_rows or 'all'}] {rows:,} rows written in {wrote:.1f} s, deleted in {took:.2f} s; chunk "
          f"writes p50/p99 {result['during_p50_ms']:.1f}/{result['during_p99_ms']:.1f} ms during (n={len(during)}) vs "
          f"{result['baseline_p50_ms']:.1f}/{result['baseline_p99_ms']:.1f} ms before (n={len(base)})", file=sys.stderr)
    return result


def tick(db: Database) -> None:
    """One short transaction that takes a transaction id (as each chunk a worker writes does)."""
    with db.session() as s:
        s.connection().exec_driver_sql("SELECT txid_current()")


def space(db: Database, rows: int, passes: int) -> dict[str, Any]:
    """A ``rows``-row history between two of ``rows // 2`` rows each (so its pages are in the
    middle of the table, where only reuse, not VACUUM's truncation of the table's end, can take
    them back): its size, the size after the delete (the default batches), after ``passes`` plain
    VACUUMs (a transaction between two), and after the same volume is written again."""
    write_history(db, rows // 2)
    job_id, _ = write_history(db, rows)
    write_history(db, rows // 2)
    vacuum(db, analyze=True)
    stored = size(db)
    print(f"[space] stored: {parts(db)}", file=sys.stderr)
    deletion.delete_job(db, job_id)
    deleted = size(db)
    for n in range(passes):
        if n:
            tick(db)
        vacuum(db)
    vacuumed = size(db)
    print(f"[space] vacuumed: {parts(db)}", file=sys.stderr)
    write_history(db, rows)
    written = size(db)
    print(f"[space] written again: {parts(db)}", file=sys.stderr)
    out = {"passes": passes, "stored_mib": stored / MIB, "deleted_mib": deleted / MIB,
           "vacuumed_mib": vacuumed / MIB, "written_again_mib": written / MIB, "growth": written / stored - 1}
    print(f"[space, {passes} VACUUM] {stored / MIB:.1f} MiB stored -> {deleted / MIB:.1f} deleted -> "
          f"{vacuumed / MIB:.1f} vacuumed -> {written / MIB:.1f} written again ({out['growth']:+.1%})", file=sys.stderr)
    return out


def _index(db: Database) -> int:
    with db.session() as s:
        return int(s.connection().exec_driver_sql("SELECT pg_indexes_size('history_chunks')").scalar())


def on_fresh(measure: Any) -> Any:
    """``measure(db)`` on a fresh, migrated PostgreSQL database (dropped afterwards), autovacuum
    off for ``history_chunks``."""
    databases = migrated()
    db = next(databases)
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ALTER TABLE history_chunks SET (autovacuum_enabled = false)")
        return measure(db)
    finally:
        db.engine.dispose()
        databases.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_001)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--batches", default="1000,5000,20000,0",
                        help="comma-separated rows per purge transaction (0: one DELETE of the whole history)")
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document too")
    args = parser.parse_args()
    sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    try:
        cycles = [on_fresh(lambda db, passes=passes: space(db, args.rows, passes)) for passes in (1, 2)]
        results = [on_fresh(lambda db, b=b: latency(db, args.rows, args.writers, b, args.baseline_seconds))
                   for b in sizes]
        version = on_fresh(lambda db: db.engine.connect().exec_driver_sql("SHOW server_version").scalar())
    except PostgresUnreachable as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} ({os.cpu_count()} CPUs, "
          f"{platform.machine()}), PostgreSQL {version}; {args.rows:,} rows (2 parameters, x recorded)\n")
    print(f"Chunk writes: {args.writers} threads, each a 100-row save_chunk every {PAUSE * 1000:.0f} ms, before and "
          "during the delete\n")
    print("| rows per purge transaction | delete | delete / write | chunk write p50 / p99 before | during (max) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch_rows'] or 'all (one DELETE)'} | {r['delete_s']:.2f} s | {r['delete_vs_write']:.2f}x | "
              f"{r['baseline_p50_ms']:.1f} / {r['baseline_p99_ms']:.1f} ms (n={r['baseline_n']}) | "
              f"{r['during_p50_ms']:.1f} / {r['during_p99_ms']:.1f} ms ({r['during_max_ms']:.0f}; n={r['during_n']}) |")
    print(f"\n`history` size (pg_total_relation_size: heap, index, TOAST; autovacuum off): a {args.rows:,}-row "
          f"history between two of {args.rows // 2:,} rows, deleted (the default purge), plain VACUUM, the same "
          "volume written again\n")
    print("| VACUUM | stored | after delete | after VACUUM | written again | growth |")
    print("|---|---|---|---|---|---|")
    for c in cycles:
        print(f"| {'one pass' if c['passes'] == 1 else 'two passes, a transaction between'} | "
              f"{c['stored_mib']:.1f} MiB | {c['deleted_mib']:.1f} MiB | {c['vacuumed_mib']:.1f} MiB | "
              f"{c['written_again_mib']:.1f} MiB | {c['growth']:+.1%} |")
    if args.json:
        print(json.dumps({"latency": results, "space": cycles}))
    print("\nspace: written again after VACUUM, the table grew " + ", ".join(
        f"{c['growth']:+.1%} ({c['passes']} pass{'es' if c['passes'] > 1 else ''})" for c in cycles)
        + " (target: at most +10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
