"""History exports through the API against PostgreSQL's own COPY of the same rows, in one run.

    python benchmarks/history_export.py [--rows 1000001] [--repeat 3] [--points-repeat 9]

Makes a fresh PostgreSQL database and a job whose history (``--rows`` rows, 2 parameters, x
recorded, no grad) is written directly through the store as a worker writes it (``save_chunk``,
binary COPY), starts the real API (``descent api``, waitress) on that database, and measures:

  (a) ``psql -c "COPY (SELECT step, f, grad_norm, lr, x[1], x[2] ...) TO STDOUT WITH CSV"``,
      output to /dev/null;
  (b) the API's CSV export of the whole history (a streaming client that discards the bytes);
  (c) the API's NDJSON export;
  (d) ``?points=1000`` as JSON: the median latency of ``--points-repeat`` requests.

Each of (a)-(c) is the median of ``--repeat`` runs, taken in turn (a, b, c, a, b, c, ...), so
the machine's drift touches them alike. Prints the times and the ratios API / psql.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from service.store import HistoryRows  # noqa: E402
from service.store import jobs as job_store  # noqa: E402
from service.store.history import save_chunk  # noqa: E402
from testkit.processes import Service, drain, running  # noqa: E402

MIB = 1024 * 1024
PER_WRITE = 50_000


def write_history(db, job_id: str, rows: int) -> None:  # type: ignore[no-untyped-def]
    """``rows`` rows of a 2-parameter job, x recorded, written as a worker writes them."""
    assert job_store.claim_job(db, job_id, "bench:1", 3600, 3) is not None
    rng = np.random.default_rng(0)
    for first in range(0, rows, PER_WRITE):
        n = min(PER_WRITE, rows - first)
        steps = np.arange(first, first + n)
        batch = HistoryRows(steps=steps, f=rng.standard_normal(n) * 100, grad_norm=np.abs(rng.standard_normal(n)),
                             lr=np.full(n, 1e-3), x=rng.standard_normal((n, 2)))
        save_chunk(db, job_id, "bench:1", batch, None, None, 3600)


def download(port: int, path: str) -> tuple[float, int]:
    """(seconds, bytes) of one GET, read in 1 MiB pieces and thrown away."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status} {resp.read()[:300]!r}")
    total = drain(resp)
    conn.close()
    return time.perf_counter() - began, total


def vm(pid: int, key: str) -> int:
    """VmRSS or VmHWM of a process, in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def psql_copy(url: str, job_id: str) -> float:
    query = (f"COPY (SELECT step, f, grad_norm, lr, x[1], x[2] FROM history_rows WHERE job_id = '{job_id}' "
             "ORDER BY step) TO STDOUT WITH CSV")
    began = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["psql", "-X", "-q", "-d", url, "-c", query], stdout=sink, check=True)
    return time.perf_counter() - began


@contextmanager
def api_on_postgres(prefix: str) -> Iterator[Service]:
    """The real API, no workers, on a fresh PostgreSQL database in a temporary folder; all of it gone after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        services = running("postgres", Path(tmp), workers=0)
        try:
            yield next(services)
        finally:
            services.close()


def vacuum_analyze(svc: Service) -> str:
    """VACUUM ANALYZE the history through psql, as an operator would; returns the psql URL of the database."""
    url = svc.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    subprocess.run(["psql", "-X", "-q", "-d", url, "-c", "VACUUM ANALYZE history_chunks"], check=True,
                   stdout=subprocess.DEVNULL)
    return url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_001)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--points-repeat", type=int, default=9)
    args = parser.parse_args()
    if not shutil.which("psql"):
        print("psql is not on PATH", file=sys.stderr)
        return 2

    with api_on_postgres("descent-export-") as svc:
        db = svc.db()
        spec = {"objective": "10 * (x ** 2).sum()", "x0": [8.0, 8.0], "steps": args.rows - 1,
                "optimizer": {"name": "sgd", "lr": 0.001}, "record": {"x": True}}
        job_id = job_store.create_job(db, spec, [2], "cpu")[0].id
        began = time.perf_counter()
        write_history(db, job_id, args.rows)
        db.engine.dispose()
        print(f"{args.rows:,} rows (2 parameters, x recorded) written in {time.perf_counter() - began:.1f}s")
        url = vacuum_analyze(svc)

        base = f"/v1/jobs/{job_id}/history"
        # warm up: the API's first history read, and the table's pages in the server's cache
        download(svc.port, base + "?format=csv&limit=10")
        psql_copy(url, job_id)

        idle_rss = vm(svc.api.pid, "VmRSS")
        times: dict[str, list[float]] = {"psql": [], "csv": [], "ndjson": []}
        sizes: dict[str, int] = {}
        for _ in range(args.repeat):
            times["psql"].append(psql_copy(url, job_id))
            for fmt in ("csv", "ndjson"):
                seconds, size = download(svc.port, f"{base}?format={fmt}")
                times[fmt].append(seconds)
                sizes[fmt] = size

        points: list[float] = []
        rows_back = None
        for _ in range(args.points_repeat):
            began = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
            conn.request("GET", f"{base}?points=1000")
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            points.append(time.perf_counter() - began)
            if resp.status != 200:
                print(f"points=1000: {resp.status} {body[:200]!r}")
                points = []
                break
            rows_back = len(json.loads(body)["rows"])

        peak_rss = vm(svc.api.pid, "VmHWM")
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} "
              f"({os.cpu_count()} CPUs, {platform.machine()}), PostgreSQL, median of {args.repeat}")
        print(f"{'':34}{'seconds':>9}{'MB':>9}{'vs psql':>9}   runs")
        print(f"{'psql COPY ... TO STDOUT WITH CSV':34}{med['psql']:9.2f}{'':>9}{1.0:8.2f}x   "
              + " ".join(f"{t:.2f}" for t in times["psql"]))
        for fmt in ("csv", "ndjson"):
            print(f"{'API ' + fmt + ' export':34}{med[fmt]:9.2f}{sizes[fmt] / 1e6:9.1f}{med[fmt] / med['psql']:8.2f}x   "
                  + " ".join(f"{t:.2f}" for t in times[fmt]))
        if points:
            print(f"{'API points=1000 (json)':34}{statistics.median(points) * 1000:8.1f}ms  {rows_back} rows, "
                  f"median of {len(points)} (min {min(points) * 1000:.1f} ms, max {max(points) * 1000:.1f} ms)")
        print(f"API memory: VmRSS {idle_rss / MIB:.0f} MiB idle, VmHWM {peak_rss / MIB:.0f} MiB after the exports")
        print(json.dumps({"rows": args.rows, "psql_s": med["psql"], "csv_s": med["csv"], "ndjson_s": med["ndjson"],
                          "csv_ratio": med["csv"] / med["psql"], "ndjson_ratio": med["ndjson"] / med["psql"],
                          "points_1000_ms": statistics.median(points) * 1000 if points else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
