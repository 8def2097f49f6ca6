"""Waiting clients against one API process: does everything else still answer at once?

    python benchmarks/waiters.py [--waiters 200] [--backend embedded|postgres] [--seconds 10]

Starts the API and one worker (embedded by default, or PostgreSQL + Redis), keeps one job running,
then measures, first on the idle API and then with ``--waiters`` clients each in a loop of
``GET /v1/jobs/<id>?wait=30`` on running or queued jobs:
- a probe's ``GET /healthz`` and ``GET /v1/jobs/<id>`` latency (p50, p99), one request every 20 ms;
- the submit rate of a light client (one connection, one submit after another);
- the API process's threads and resident memory.
At the end the jobs are cancelled: every waiter must get its answer (the finished job), with no
5xx and no dropped connection. Targets (issue 10): p99 under 100 ms with 200 waiters, the submit
rate at least 80% of the idle API's.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit.processes import Service, service_on  # noqa: E402

LONG = {"objective": "10 * (x ** 2).sum()", "x0": {"shape": [1000]}, "steps": 1_000_000,
        "optimizer": {"name": "sgd", "lr": 1e-6}, "record": {"every": 1000, "x": False}}
LIGHT = {"objective": "(x ** 2).sum()", "x0": [1.0, 2.0], "steps": 1}


class Client:
    """One keep-alive connection to the API."""

    def __init__(self, port: int, timeout: float = 60) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines)}


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  (n={len(ordered)})"


def probe(port: int, job_id: str, seconds: float) -> tuple[list[float], list[float]]:
    client, health, job = Client(port), [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for path, out in (("/healthz", health), (f"/v1/jobs/{job_id}", job)):
            began = time.perf_counter()
            status, _ = client.call("GET", path)
            out.append(time.perf_counter() - began)
            assert status == 200, (path, status)
        time.sleep(0.02)
    return health, job


def submit_rate(port: int, seconds: float) -> float:
    client, done = Client(port), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        status, _ = client.call("POST", "/v1/jobs", LIGHT)
        assert status == 202, status
        done += 1
    return done / seconds


def measure(svc: Service, job_id: str, seconds: float, label: str) -> dict[str, float]:
    health, job = probe(svc.port, job_id, seconds)
    rate = submit_rate(svc.port, seconds)
    status = proc_status(svc.api.pid)  # type: ignore[union-attr]
    print(f"{label:>12}: /healthz {percentiles(health)}")
    print(f"{'':>12}  GET job  {percentiles(job)}")
    print(f"{'':>12}  submits {rate:7.1f}/s   API threads {status['Threads']}   RSS {status['VmRSS']}", flush=True)
    return {"rate": rate, "health_p99": sorted(health)[int(len(health) * 0.99)],
            "job_p99": sorted(job)[int(len(job) * 0.99)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiters", type=int, default=200)
    parser.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    services = service_on(args.backend, Path(tempfile.mkdtemp(prefix="descent-waiters-")))
    svc = next(services)
    try:
        svc.start(workers=1)
        admin = Client(svc.port)
        running = admin.call("POST", "/v1/jobs", LONG)[1]["id"]
        svc.wait_status(running, "running")
        queued = [admin.call("POST", "/v1/jobs", LONG)[1]["id"] for _ in range(9)]
        waited = [running, *queued]
        print(f"descent API on {args.backend}, {args.waiters} waiting clients, {args.seconds:g} s per measurement")
        idle = measure(svc, running, args.seconds, "idle")

        answers: list[tuple[int, str]] = []
        errors: list[str] = []
        stop = threading.Event()

        def waiter(i: int) -> None:
            client = Client(svc.port, timeout=90)
            job_id = waited[i % len(waited)]
            while True:
                try:
                    status, body = client.call("GET", f"/v1/jobs/{job_id}?wait=30")
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none may happen
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                answers.append((status, body["status"] if body else "?"))
                if status >= 500 or (body and body["status"] in ("succeeded", "failed", "cancelled")) or stop.is_set():
                    return

        threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(args.waiters)]
        for t in threads:
            t.start()
        time.sleep(3)
        waiting = measure(svc, running, args.seconds, f"{args.waiters} waiting")

        stop.set()
        for job_id in waited:
            admin.call("POST", f"/v1/jobs/{job_id}/cancel")
        for t in threads:
            t.join(60)
        alive = sum(t.is_alive() for t in threads)
        finished = sum(1 for status, job in answers if status == 200 and job == "cancelled")
        bad = [a for a in answers if a[0] != 200]
        print(f"answers: {len(answers)} ({finished} with the cancelled job), non-200: {len(bad)}, "
              f"errors: {len(errors)}, waiters still waiting: {alive}")
        print(f"ratios vs idle: submit rate {waiting['rate'] / idle['rate']:.2f} (target >= 0.80); "
              f"p99 /healthz {waiting['health_p99'] * 1000:.1f} ms, GET job {waiting['job_p99'] * 1000:.1f} ms "
              "(target < 100 ms)")
        if errors or bad or alive:
            print("FAILED: " + "; ".join(errors[:5]))
            sys.exit(1)
    finally:
        services.close()


if __name__ == "__main__":
    main()
