"""The API's memory while it streams wide histories: concurrent CSV exports of a job whose x has
a million elements, against the same API process idle, in the same run.

    python benchmarks/export_rss.py [--backend postgres|embedded] [--numel 1000000] [--rows 24]
                                    [--exports 2] [--format csv|ndjson|json]

Starts the real API (``descent api``, waitress) as a subprocess on a private PostgreSQL database
(``--backend embedded``: a SQLite file), submits one job through it (no worker runs), and writes
the job's history directly through the store as a worker would (``save_chunk``): ``--rows`` rows
of ``--numel`` random float64 values of x. Then it warms the API up with a small history read,
takes the idle API's resident set (VmRSS), runs ``--exports`` concurrent exports with streaming
clients that discard the bytes while a sampler reads the API's VmRSS every 20 ms, and prints
the peak (sampled VmRSS and the kernel's high-water mark VmHWM) against the idle figure.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from service.store import HistoryRows  # noqa: E402
from service.store import jobs as job_store  # noqa: E402
from service.store.history import save_chunk  # noqa: E402
from service.store.migrate import upgrade  # noqa: E402
from testkit.backends import embedded_settings, pg_database  # noqa: E402
from testkit.processes import Service, drain  # noqa: E402

MIB = 1024 * 1024


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (psutil is not a dependency)."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.samples = pid, every, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
            self.samples += 1
            self.stop.wait(self.every)


def export(port: int, path: str, counts: list[int], index: int, errors: list[str]) -> None:
    """One streaming client: read the response in 1 MiB pieces and throw them away."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            errors.append(f"{path}: {resp.status} {resp.read()[:300]!r}")
            return
        total = drain(resp)
        counts[index] = total
        conn.close()
    except Exception as exc:  # noqa: BLE001 - reported with the figures
        errors.append(f"{path}: {exc!r}")


def write_history(db, job_id: str, numel: int, rows: int, per_write: int = 2) -> None:  # type: ignore[no-untyped-def]
    assert job_store.claim_job(db, job_id, "bench:1", 3600, 3) is not None
    rng = np.random.default_rng(0)
    for first in range(0, rows, per_write):
        n = min(per_write, rows - first)
        steps = np.arange(first, first + n)
        batch = HistoryRows(steps=steps, f=rng.standard_normal(n), grad_norm=np.abs(rng.standard_normal(n)),
                             lr=np.full(n, 1e-3), x=rng.standard_normal((n, numel)))
        save_chunk(db, job_id, "bench:1", batch, None, None, 3600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgres", "embedded"], default="postgres")
    parser.add_argument("--numel", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--exports", type=int, default=2)
    parser.add_argument("--format", choices=["csv", "ndjson", "json"], default="csv")
    args = parser.parse_args()

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="descent-rss-")))
        settings = embedded_settings(tmp)
        if args.backend == "postgres":
            databases = pg_database()
            stack.callback(databases.close)
            settings = replace(settings, database_url=next(databases))
        service = Service(settings, tmp)
        stack.callback(service.stop)
        db = service.db()
        stack.callback(db.engine.dispose)
        upgrade(db)
        service.start_api()
        assert service.api is not None
        pid = service.api.pid

        spec = {"objective": "(x ** 2).sum()", "x0": {"shape": [args.numel], "init": "normal"},
                "steps": args.rows - 1, "optimizer": {"name": "sgd", "lr": 0.001}, "record": {"x": True}}
        job_id = service.submit(spec)["id"]
        began = time.perf_counter()
        write_history(db, job_id, args.numel, args.rows)
        print(f"backend {args.backend} ({db.dialect}); job {job_id}: {args.rows} rows of x with {args.numel:,} "
              f"float64 values written in {time.perf_counter() - began:.1f}s")

        # warm up the code paths of a history read (a narrow one) before the idle figure
        warm = service.http.get(f"{service.url}/v1/jobs/{job_id}/history", params={"fields": "f", "format": args.format},
                                timeout=60)
        assert warm.status_code == 200, warm.text
        time.sleep(1.0)
        idle = proc_status(pid)

        path = f"/v1/jobs/{job_id}/history?format={args.format}"
        if args.format == "json":
            path += f"&limit={args.rows}"
        counts, errors = [0] * args.exports, []
        sampler = Sampler(pid)
        sampler.start()
        began = time.perf_counter()
        clients = [threading.Thread(target=export, args=(service.port, path, counts, i, errors))
                   for i in range(args.exports)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        seconds = time.perf_counter() - began
        sampler.stop.set()
        sampler.join()
        after = proc_status(pid)
        if errors:
            print("errors:", *errors, sep="\n  ")
            return 1

        peak = max(sampler.peak, after["VmHWM"])
        print(f"{args.exports} concurrent {args.format} exports: {', '.join(f'{c / MIB:,.0f} MiB' for c in counts)} "
              f"in {seconds:.1f}s ({sum(counts) / MIB / seconds:,.1f} MiB/s in all)")
        print(f"API idle:        VmRSS {idle['VmRSS'] / MIB:8.1f} MiB  (VmHWM so far {idle['VmHWM'] / MIB:.1f} MiB)")
        print(f"API exporting:   VmRSS peak {sampler.peak / MIB:8.1f} MiB sampled ({sampler.samples} samples), "
              f"VmHWM {after['VmHWM'] / MIB:.1f} MiB")
        print(f"peak / idle:     {peak / idle['VmRSS']:.2f}x  (+{(peak - idle['VmRSS']) / MIB:.1f} MiB for "
              f"{args.exports} exports, {(peak - idle['VmRSS']) / MIB / args.exports:.1f} MiB each)")
        print(json.dumps({"backend": args.backend, "numel": args.numel, "rows": args.rows, "exports": args.exports,
                          "format": args.format, "idle_rss": idle["VmRSS"], "peak_rss": peak,
                          "bytes": counts, "seconds": round(seconds, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
