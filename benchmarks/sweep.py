"""A sweep of lesson-sized jobs end to end through the API, against the same jobs one at a time.

    python benchmarks/sweep.py [--jobs 10000] [--solo 100] [--workers 1] [--batch-max N] [--json]

Starts the real API and ``--workers`` worker processes on PostgreSQL + Redis (a fresh database and
a Redis database of its own), then, on the same service:

(a) one at a time: ``--solo`` Rosenbrock jobs (the catalog's ``rosenbrock``, 500 SGD steps at
    lr 1e-3, ``record.every = 10``, x recorded), each from a random start, each submitted only
    after the last one finished (the client waits with ``GET /v1/jobs/<id>?wait=30``). The mean
    per job, times ``--jobs``, is the one-at-a-time estimate for all the jobs: a *sample* of
    ``--solo`` jobs, scaled, not ``--jobs`` jobs run one by one.
(b) the sweep: one ``POST /v1/sweeps`` with the same base spec and ``--jobs`` random starts
    (uniform in [-1.5, 1.5]^2, where SGD at this rate never diverges), then light polling of
    ``GET /v1/sweeps/<id>`` (its counts, four times a second) until every job has finished; the
    sweep's time runs from the POST to the last job's ``finished_at``.
    Every job must succeed and store exactly the rows its record rule keeps (rows 0, 10, ..., 500:
    51 per job), counted in SQL; then the summary (``?sort=f``) is read once and timed.

Prints the sweep's seconds, the scaled one-at-a-time seconds and their ratio (target >= 200).
``--batch-max N`` starts the workers with ``DESCENT_BATCH_MAX=N`` (1: batching off); without
it the workers get the service's default. Both clients are light (http.client, keep-alive).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sqlalchemy import text  # noqa: E402

from service.config import Limits, Quotas, Settings  # noqa: E402
from service.store.status import FINISHED  # noqa: E402
from testkit.backends import REDIS_URL, embedded_settings, pg_database, redis_url_for_test  # noqa: E402
from testkit.processes import Service  # noqa: E402

STEPS, EVERY = 500, 10
BASE = {"objective": {"name": "rosenbrock"}, "steps": STEPS, "optimizer": {"name": "sgd", "lr": 1e-3},
        "record": {"every": EVERY, "x": True}}
LOW, HIGH = -1.5, 1.5
BATCH_ENV = "DESCENT_BATCH_MAX"


def expected_rows(steps: int, every: int = EVERY) -> int:
    """Rows a run of ``steps`` steps keeps with ``record.every``: 0, every, 2*every, ... and the last."""
    return len(range(0, steps + 1, every)) + (1 if steps % every else 0)


# -- the service, with DESCENT_BATCH_MAX handed to its processes ---------------------------------

@dataclass
class BenchService(Service):
    """testkit's Service, whose child processes also get ``extra_env`` (for settings that
    ``settings_env`` does not carry, such as ``DESCENT_BATCH_MAX`` before Settings declares it)."""

    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra_env}


def with_env_setting(settings: Settings, name: str, value: Any) -> Settings:
    """``settings`` with the field read from environment variable ``name`` set to ``value``, if
    Settings (or its limits or quotas) declares one; unchanged otherwise."""
    for f in fields(Settings):
        if f.metadata.get("env") == name:
            return replace(settings, **{f.name: type(getattr(settings, f.name))(value)})
    for group_name, cls in (("limits", Limits), ("quotas", Quotas)):
        group = getattr(settings, group_name)
        for f in fields(cls):
            if f.metadata.get("env") == name:
                return replace(settings, **{group_name: replace(group, **{f.name: type(getattr(group, f.name))(value)})})
    return settings


@contextlib.contextmanager
def running_service(workers: int = 1, batch_max: int | None = None, prefix: str = "descent-bench-") -> Iterator[BenchService]:
    """The API and ``workers`` worker processes on PostgreSQL + Redis: a fresh database (dropped
    afterwards) and a flushed Redis database of its own. ``batch_max`` (if given) reaches every
    process as ``DESCENT_BATCH_MAX``, through Settings where it declares the variable and through
    the environment in any case."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        pg = pg_database()
        settings = replace(embedded_settings(Path(tmp)), database_url=next(pg),
                           broker_url=redis_url_for_test(REDIS_URL))
        extra: dict[str, str] = {}
        if batch_max is not None:
            settings = with_env_setting(settings, BATCH_ENV, batch_max)
            extra[BATCH_ENV] = str(batch_max)
        svc = BenchService(settings=settings, log_dir=Path(tmp), extra_env=extra)
        try:
            svc.start(workers=workers)
            yield svc
        finally:
            svc.stop()
            pg.close()


# -- a light client ------------------------------------------------------------------------------

class Client:
    """One keep-alive connection to the API; JSON in and out."""

    def __init__(self, port: int, timeout: float = 120) -> None:
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(100):
            try:
                self.conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
                resp = self.conn.getresponse()
                payload = resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
                continue
            if resp.status == 503:  # the database briefly unavailable: retry as any client should
                time.sleep(0.1)
                continue
            want = expect if expect is not None else (202 if method == "POST" else 200)
            if resp.status != want:
                raise SystemExit(f"{method} {path}: {resp.status} {payload[:500]!r}")
            return json.loads(payload)
        raise SystemExit(f"{method} {path}: 503 for 10 s")

    def wait(self, job_id: str) -> dict[str, Any]:
        while True:
            job = self.call("GET", f"/v1/jobs/{job_id}?wait=30")
            if job["status"] in FINISHED:
                return job

    def close(self) -> None:
        self.conn.close()


def solo_specs(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` job specs: the sweep's base with random starts from the sweep's distribution."""
    starts = np.random.default_rng(seed).uniform(LOW, HIGH, (n, 2))
    return [{**BASE, "x0": [float(a), float(b)]} for a, b in starts]


def one_at_a_time(svc: Service, n: int) -> list[float]:
    """Seconds of each of ``n`` jobs, submitted only after the last one finished."""
    client = Client(svc.port)
    times = []
    for spec in solo_specs(n):
        began = time.perf_counter()
        job = client.wait(client.call("POST", "/v1/jobs", spec)["id"])
        times.append(time.perf_counter() - began)
        if job["status"] != "succeeded":
            raise SystemExit(f"solo job {job['id']} {job['status']}: {job.get('error')}")
    client.close()
    return times


def run_sweep(svc: Service, jobs: int, poll: float = 0.25) -> dict[str, Any]:
    """Submit the sweep, wait until every job finished, check the stored rows, read the summary."""
    client = Client(svc.port)
    request = {"base": BASE, "starts": {"count": jobs, "init": "uniform", "low": LOW, "high": HIGH, "seed": 0},
               "name": "bench-sweep"}
    began, began_epoch = time.perf_counter(), time.time()
    answer = client.call("POST", "/v1/sweeps", request)
    accepted = time.perf_counter() - began
    sweep_id = answer["id"]
    poll_times: list[float] = []
    while True:
        t0 = time.perf_counter()
        counts = client.call("GET", f"/v1/sweeps/{sweep_id}?limit=1")["counts"]
        poll_times.append(time.perf_counter() - t0)
        if sum(counts.get(s, 0) for s in FINISHED) >= jobs:
            break
        time.sleep(poll)
    observed = time.perf_counter() - began
    if counts.get("succeeded", 0) != jobs:
        raise SystemExit(f"sweep {sweep_id}: not every job succeeded: {counts}")

    db = svc.db()
    try:
        with db.session() as s:
            # every job's stored rows against what its record rule keeps for the steps it ran
            per_job = s.execute(text(
                "SELECT j.id, j.result, (SELECT count(*) FROM history h WHERE h.job_id = j.id) "
                "FROM jobs j WHERE j.sweep_id = :s"), {"s": sweep_id}).all()
            last_finished = s.execute(text("SELECT extract(epoch FROM max(finished_at)) FROM jobs WHERE sweep_id = :s"),
                                      {"s": sweep_id}).scalar()
    finally:
        db.engine.dispose()
    result = lambda r: r if isinstance(r, dict) else json.loads(r)  # noqa: E731
    steps = [result(r)["steps"] for _, r, _ in per_job]
    expected = sum(expected_rows(n) for n in steps)
    stored = sum(int(c) for _, _, c in per_job)
    wrong = [(job_id, c, expected_rows(result(r)["steps"])) for job_id, r, c in per_job
             if int(c) != expected_rows(result(r)["steps"])]
    if len(per_job) != jobs or wrong or stored != expected:
        raise SystemExit(f"sweep {sweep_id}: {len(per_job)} jobs, {stored} rows stored, {expected} expected; "
                         f"first wrong: {wrong[:3]}")

    t0 = time.perf_counter()
    summary = client.call("GET", f"/v1/sweeps/{sweep_id}?sort=f&limit=100")
    summary_ms = (time.perf_counter() - t0) * 1000
    client.close()
    best = summary["summary"][0] if summary["summary"] else {}
    # From the POST to the last job's finished_at (the worker writes it in the transaction that
    # ends the job; the same machine's clock), as benchmarks/burst.py and e2e.py measure: the
    # client's polling interval is not part of it (observed_s, where it is, is reported too).
    wall = float(last_finished) - began_epoch
    return {"sweep_id": sweep_id, "jobs": jobs, "sweep_s": wall, "observed_s": observed, "accepted_s": accepted,
            "polls": len(poll_times),
            "poll_median_ms": statistics.median(poll_times) * 1000, "rows": stored, "rows_expected": expected,
            "rows_per_job": expected // jobs if jobs else 0, "all_full_runs": all(n == STEPS for n in steps),
            "summary_ms": summary_ms, "best_f": best.get("f"), "best_steps_to_tolerance": best.get("steps_to_tolerance")}


def measure(jobs: int = 10_000, solo: int = 100, workers: int = 1, batch_max: int | None = None,
            log: Any = None) -> dict[str, Any]:
    say = log or (lambda *a: None)
    with running_service(workers, batch_max, prefix="descent-sweep-") as svc:
        warm = Client(svc.port)
        warm.wait(warm.call("POST", "/v1/jobs", solo_specs(1, seed=99)[0])["id"])  # both paths once
        warm.close()
        say(f"one at a time: {solo} jobs ...")
        solo_times = one_at_a_time(svc, solo)
        mean = statistics.mean(solo_times)
        say(f"  mean {mean * 1000:.1f} ms/job; sweep of {jobs:,} jobs ...")
        sweep = run_sweep(svc, jobs)
    scaled = mean * jobs
    out = {**sweep, "workers": workers, "batch_max": batch_max, "solo_jobs": solo, "solo_mean_s": mean,
           "solo_median_s": statistics.median(solo_times), "solo_scaled_s": scaled, "ratio": scaled / sweep["sweep_s"]}
    say(f"  sweep {sweep['sweep_s']:.1f} s ({jobs / sweep['sweep_s']:.0f} jobs/s), ratio {out['ratio']:.1f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--solo", type=int, default=100, help="one-at-a-time sample size (scaled to --jobs)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-max", type=int, default=None, help=f"{BATCH_ENV} for the workers (default: the service's)")
    parser.add_argument("--json", action="store_true", help="print one JSON line of results only")
    args = parser.parse_args()
    log = None if args.json else (lambda *a: print(*a, flush=True))
    out = measure(args.jobs, args.solo, args.workers, args.batch_max, log)
    if args.json:
        print(json.dumps(out))
        return
    print(f"PostgreSQL + Redis, {args.workers} worker(s), {BATCH_ENV}={args.batch_max if args.batch_max is not None else 'default'}")
    print(f"Rosenbrock, {STEPS} SGD steps (lr 1e-3), every {EVERY}th row and the last recorded, x recorded")
    print(f"one at a time: a sample of {out['solo_jobs']} jobs, mean {out['solo_mean_s'] * 1000:.1f} ms "
          f"(median {out['solo_median_s'] * 1000:.1f} ms), scaled to {out['jobs']:,} jobs: {out['solo_scaled_s']:.1f} s")
    print(f"sweep of {out['jobs']:,} jobs: {out['sweep_s']:.1f} s from POST to every job finished "
          f"(answered in {out['accepted_s'] * 1000:.0f} ms); {out['rows']:,} rows stored = {out['rows_expected']:,} expected; "
          f"summary ?sort=f in {out['summary_ms']:.0f} ms; {out['polls']} polls, median {out['poll_median_ms']:.1f} ms")
    print(f"ratio one-at-a-time / sweep = {out['ratio']:.1f}  (target >= 200)")


if __name__ == "__main__":
    main()
