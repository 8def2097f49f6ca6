"""``?points=1000`` against a plain page of as many rows of the same job, in one run.

    python benchmarks/points.py [--rows 1000001] [--repeat 9]

Makes a fresh PostgreSQL database with two jobs whose histories are written directly through
the store as a worker writes them (``save_chunk``, binary COPY), starts the real API (``descent
api``, waitress) on it, and times JSON requests end to end (the whole body read):

  wide: a 5,000-step job of 100 parameters (5,001 rows, x recorded);
  long: a ``--rows``-row job of 2 parameters (x recorded).

For each job, ``?points=1000`` is timed against the baseline ``?limit=1000`` (the first 1,000
rows: the same number of rows of the same width, read as one range of the index), ``--repeat``
requests of each, alternating. ``points`` reads the same number of rows wherever they lie, so
the ratio points / page says what choosing them costs. Both are measured right after the
writes (before any ANALYZE has seen them: the case that took 9.1 s) and again after ``VACUUM
ANALYZE``. Prints the medians and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from history_export import api_on_postgres, vacuum_analyze  # noqa: E402  (benchmarks/history_export.py)

from service.store import HistoryRows  # noqa: E402
from service.store import jobs as job_store  # noqa: E402
from service.store.history import save_chunk  # noqa: E402

PER_WRITE = 50_000
POINTS = 1000


def new_history(db: Any, numel: int, rows: int) -> str:  # type: ignore[no-untyped-def]
    """A job of ``numel`` parameters with ``rows`` rows (x recorded), written as a worker writes them."""
    spec = {"objective": "10 * (x ** 2).sum()", "x0": [8.0] * numel, "steps": rows - 1,
            "optimizer": {"name": "sgd", "lr": 0.001}, "record": {"x": True}}
    job_id = job_store.create_job(db, spec, [numel], "cpu")[0].id
    assert job_store.claim_job(db, job_id, "bench:1", 3600, 3) is not None
    rng = np.random.default_rng(0)
    for first in range(0, rows, PER_WRITE):
        n = min(PER_WRITE, rows - first)
        batch = HistoryRows(steps=np.arange(first, first + n), f=rng.standard_normal(n) * 100,
                             grad_norm=np.abs(rng.standard_normal(n)), lr=np.full(n, 1e-3),
                             x=rng.standard_normal((n, numel)))
        save_chunk(db, job_id, "bench:1", batch, None, None, 3600)
    return job_id


def get(port: int, path: str) -> tuple[float, int]:
    """(seconds, rows) of one JSON GET, its whole body read."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    seconds = time.perf_counter() - began
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status} {body[:300]!r}")
    return seconds, len(json.loads(body)["rows"])


def measure(port: int, job_id: str, repeat: int) -> dict[str, Any]:
    """Medians of ``points=1000`` and of the baseline page, ``repeat`` of each, alternating."""
    base = f"/v1/jobs/{job_id}/history"
    paths = {"points": f"{base}?points={POINTS}", "page": f"{base}?limit={POINTS}"}
    for path in paths.values():  # warm up: the job's pages in the server's cache, the API's first read
        get(port, path)
    times: dict[str, list[float]] = {"points": [], "page": []}
    for i in range(repeat):
        for name in ("points", "page") if i % 2 == 0 else ("page", "points"):
            seconds, rows = get(port, paths[name])
            if rows != POINTS:
                raise RuntimeError(f"{paths[name]} answered {rows} rows, not {POINTS}")
            times[name].append(seconds)
    points_ms, page_ms = (statistics.median(times[k]) * 1000 for k in ("points", "page"))
    return {"points_ms": points_ms, "page_ms": page_ms, "ratio": points_ms / page_ms,
            "points_max_ms": max(times["points"]) * 1000, "repeat": repeat}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_001, help="rows of the long job")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()

    with api_on_postgres("descent-points-") as svc:
        db = svc.db()
        began = time.perf_counter()
        jobs = {"wide": (new_history(db, 100, 5001), 100, 5001),
                "long": (new_history(db, 2, args.rows), 2, args.rows)}
        db.engine.dispose()
        print(f"histories written in {time.perf_counter() - began:.1f}s: 5,001 rows of 100 parameters, "
              f"{args.rows:,} rows of 2", file=sys.stderr)
        results: dict[str, Any] = {}
        for state in ("fresh", "analyzed"):
            if state == "analyzed":
                vacuum_analyze(svc)
            for name, (job_id, numel, rows) in jobs.items():
                m = measure(svc.port, job_id, args.repeat)
                results[f"{name}_{state}"] = {**m, "numel": numel, "rows": rows}
                print(f"{name:>4} ({rows:>9,} rows x {numel:>3}) {state:>8}: points={POINTS} "
                      f"{m['points_ms']:7.1f} ms (max {m['points_max_ms']:.1f}), page of {POINTS} "
                      f"{m['page_ms']:7.1f} ms, points / page {m['ratio']:.2f}x", file=sys.stderr)
    worst = {name: max((results[f"{name}_{s}"] for s in ("fresh", "analyzed")), key=lambda r: r["points_ms"])
             for name in ("wide", "long")}
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} ({os.cpu_count()} CPUs), "
          f"PostgreSQL; medians of {args.repeat}", file=sys.stderr)
    print(json.dumps({"points": POINTS, "repeat": args.repeat, **results, "worst": worst}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
