"""The Python client's history reads against a plain download of the API's CSV, in one run.

    python benchmarks/client_history.py [--rows 100000] [--repeat 5] [--backend embedded|postgres|both] [--cli]

For each backend, makes a job whose history (``--rows`` rows, 2 parameters, x recorded, no grad)
is written directly through the store as a worker writes it (``save_chunk``), starts the real
API (``descent api``, waitress) on that database, and measures, in turn (a, b, c, a, b, c, ...)
so the machine's drift touches them alike:

  (a) ``GET /v1/jobs/ID/history?format=csv``: one streamed download, read in 1 MiB pieces and
      thrown away (http.client: the cheapest client there is);
  (b) ``job.history()``: the rows as the client returns them (a list of dicts without pandas);
  (c) ``job.history_arrays()``: a dict of numpy columns;

and once, for the record, the client's former way: JSON pages of 10,000 rows (``history_pages``).
With ``--cli``, also ``descent history ID`` (JSON) and ``descent history ID --csv``, to
/dev/null, each a whole process. Prints the medians and the ratios to (a), and the CPU time
the client process spent on (b) and (c) (a machine loaded by other work stretches the client's
share of the wall time, so this says what the client costs whatever the load); the target is
``job.history()`` at most 1.5x the CSV download.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from history_export import download, write_history  # noqa: E402  (the same job, written and read the same way)

from service.client import Client, JobHandle  # noqa: E402
from service.client.jobs import _finite  # noqa: E402
from service.store import jobs as job_store  # noqa: E402
from testkit.processes import BIN, service_on  # noqa: E402

TARGET = 1.5


def timed(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def timed_cpu(fn, cpu: list[float]) -> float:  # type: ignore[no-untyped-def]
    """Wall seconds of ``fn()``; the client process's CPU seconds for it are appended to ``cpu``."""
    began = time.process_time()
    seconds, value = timed(fn)
    cpu.append(time.process_time() - began)
    del value
    return seconds


def cli(url: str, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("DESCENT_TOKEN",)}
    began = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run([str(BIN / "descent"), "history", *args], env={**env, "DESCENT_URL": url}, stdout=sink,
                       check=True)
    return time.perf_counter() - began


def measure(backend: str, rows: int, repeat: int, with_cli: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="descent-client-history-") as tmp:
        services = service_on(backend, Path(tmp))
        try:
            svc = next(services)
            svc.start(workers=0)
            db = svc.db()
            spec = {"objective": "10 * (x ** 2).sum()", "x0": [8.0, 8.0], "steps": rows - 1,
                    "optimizer": {"name": "sgd", "lr": 0.001}, "record": {"x": True}}
            job_id = job_store.create_job(db, spec, [2], "cpu")[0].id
            write_history(db, job_id, rows)
            db.engine.dispose()
            job = JobHandle(Client(svc.url, token=""), job_id)
            path = f"/v1/jobs/{job_id}/history?format=csv"
            download(svc.port, path)  # warm up: the API's first read, the table in the cache
            check = job.history(as_frame=False)
            assert len(check) == rows and list(check[-1]) == ["step", "f", "grad_norm", "lr", "x"]
            del check

            times: dict[str, list[float]] = {"csv": [], "history": [], "arrays": []}
            if with_cli:
                times.update({"cli_json": [], "cli_csv": []})
            cpu: dict[str, list[float]] = {"history": [], "arrays": []}
            size = 0
            for _ in range(repeat):
                seconds, size = download(svc.port, path)
                times["csv"].append(seconds)
                times["history"].append(timed_cpu(lambda: job.history(as_frame=False), cpu["history"]))
                times["arrays"].append(timed_cpu(job.history_arrays, cpu["arrays"]))
                if with_cli:
                    times["cli_json"].append(cli(svc.url, job_id))
                    times["cli_csv"].append(cli(svc.url, job_id, "--csv"))
            paged, old = timed(lambda: [_finite(r) for page in job.history_pages() for r in page])
            assert len(old) == rows  # type: ignore[arg-type]
            del old
        finally:
            services.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["csv"]
    print(f"\n{backend}: {rows:,} rows (2 parameters, x recorded), {size / 1e6:.1f} MB of CSV, median of {repeat}")
    print(f"{'':44}{'seconds':>9}{'vs csv':>9}{'CPU s':>7}   runs")
    names = {"csv": "GET ?format=csv (http.client, discarded)", "history": "job.history() (list of dicts)",
             "arrays": "job.history_arrays() (numpy columns)", "cli_json": "descent history ID > /dev/null",
             "cli_csv": "descent history ID --csv > /dev/null"}
    for key, label in names.items():
        if key in med:
            used = f"{statistics.median(cpu[key]):7.3f}" if key in cpu else " " * 7
            print(f"{label:44}{med[key]:9.3f}{med[key] / base:8.2f}x{used}   " + " ".join(f"{t:.3f}" for t in times[key]))
    print(f"{'former history(): JSON pages (once)':44}{paged:9.3f}{paged / base:8.2f}x")
    verdict = "met" if med["history"] / base <= TARGET else "NOT met"
    print(f"job.history() / CSV download = {med['history'] / base:.2f}x (target <= {TARGET}x: {verdict})")
    return {"backend": backend, "rows": rows, "csv_s": base, "history_s": med["history"],  # type: ignore[dict-item]
            "arrays_s": med["arrays"], "paged_json_s": paged, "history_ratio": med["history"] / base,
            "arrays_ratio": med["arrays"] / base, "history_cpu_s": statistics.median(cpu["history"]),
            "arrays_cpu_s": statistics.median(cpu["arrays"]),
            **({"cli_json_s": med["cli_json"], "cli_csv_s": med["cli_csv"]} if with_cli else {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", choices=("embedded", "postgres", "both"), default="both")
    parser.add_argument("--cli", action="store_true", help="also time the descent history command")
    args = parser.parse_args()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} "
          f"({os.cpu_count()} CPUs, {platform.machine()})")
    backends = ("embedded", "postgres") if args.backend == "both" else (args.backend,)
    results = [measure(b, args.rows, args.repeat, args.cli) for b in backends]
    print(json.dumps(results))
    return 0 if all(r["history_ratio"] <= TARGET for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
