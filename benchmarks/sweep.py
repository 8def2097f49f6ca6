"""A sweep of lesson-sized jobs end to end through the API, against the same jobs one at a time.

    python benchmarks/sweep.py [--jobs 10000] [--solo 100] [--workers 1] [--batch-max N] [--poll 0.05] [--json]

Starts the real API and ``--workers`` worker processes on PostgreSQL + Redis (a fresh database and
a Redis database of its own), then, on the same service:

(a) one at a time: ``--solo`` Rosenbrock jobs (the catalog's ``rosenbrock``, 500 SGD steps at
    lr 1e-3, ``record.every = 10``, x recorded), each from a random start, each submitted only
    after the last one finished (the client waits with ``GET /v1/jobs/<id>?wait=30``). The mean
    per job, times ``--jobs``, is the one-at-a-time estimate for all the jobs: a *sample* of
    ``--solo`` jobs, scaled, not ``--jobs`` jobs run one by one.
(b) the sweep: one ``POST /v1/sweeps`` with the same base spec and ``--jobs`` random starts
    (uniform in [-1.5, 1.5]^2, where SGD at this rate never diverges). The sweep's time runs from
    just before the POST until a client *sees* every job finished: a poll of committed rows
    (``SELECT count(*) ... WHERE sweep_id = ... AND status IN (finished)``, on a connection of
    its own in autocommit, every ``--poll`` seconds, 0.05 by default), timed by this process's
    clock when a query first returns the full count. That interval is the measurement's
    resolution (the window between the last query that did not see it and the first that did
    is printed too). It is never timed to a stamp the service writes about itself: the last
    ``finished_at`` is printed beside it for comparison only. The API's counts
    (``GET /v1/sweeps/<id>``) are then read once and must agree.
    Every job must succeed and store exactly the rows its record rule keeps (rows 0, 10, ..., 500:
    51 per job), counted in SQL; then the summary (``?sort=f``) is read once and timed.

The baseline (a) is observed by a client too: ``?wait`` answers when the API is told the job's
end was committed (PostgreSQL's NOTIFY, delivered at commit), and the client's clock times it.
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
import threading
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from service.config import Limits, Quotas, Settings  # noqa: E402
from service.status import FINISHED  # noqa: E402
from testkit.backends import embedded_settings, pg_database, redis_url_for_test  # noqa: E402
from testkit.processes import Service  # noqa: E402

STEPS, EVERY = 500, 10
BASE = {"objective": {"name": "rosenbrock"}, "steps": STEPS, "optimizer": {"name": "sgd", "lr": 1e-3},
        "record": {"every": EVERY, "x": True}}
LOW, HIGH = -1.5, 1.5
BATCH_ENV = "DESCENT_BATCH_MAX"
POLL = 0.05  # seconds between two polls of committed rows: the resolution of every end time here
FINISHED_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(FINISHED)) + ")"  # constants, for IN


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
    afterwards) and a Redis database of its own, on a redis-server this process started.
    ``batch_max`` (if given) reaches every process as ``DESCENT_BATCH_MAX``, through Settings where
    it declares the variable and through the environment in any case."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        pg = pg_database()
        settings = replace(embedded_settings(Path(tmp)), database_url=next(pg),
                           broker_url=redis_url_for_test())
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


# -- what a client observes: a poll of committed rows ---------------------------------------------

class Observer:
    """When a client first *sees* jobs finished: a thread that runs one query on a database
    connection of its own (autocommit, so each query reads what is committed at that moment;
    on SQLite no write lock is taken) every ``interval`` seconds, start to start, and notes with
    this process's ``time.perf_counter`` when the answer first reaches ``target``.

    ``query`` returns either one count (``ids=False``) or the ids of finished jobs (``ids=True``;
    ids in ``exclude`` are ignored, and each other id's first sighting is kept in ``seen``).
    ``seen_at`` is the return of the first query whose answer reached ``target``; the moment the
    last job's end became visible lies after ``window_from`` (the start of the query before it,
    which did not see it all) and before ``seen_at``."""

    def __init__(self, database_url: str, query: str, params: dict[str, Any] | None, target: int,
                 interval: float = POLL, ids: bool = False, exclude: set[str] | None = None) -> None:
        self.query, self.params, self.target, self.interval = text(query), dict(params or {}), target, interval
        self.ids, self.exclude = ids, set(exclude or ())
        self.engine = create_engine(database_url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0) \
            if not database_url.startswith("sqlite") else create_engine(database_url, isolation_level="AUTOCOMMIT")
        self.seen: dict[str, float] = {}
        self.seen_at: float | None = None
        self.window_from: float | None = None
        self.count = 0
        self.query_s: list[float] = []
        self.error: BaseException | None = None
        self._done, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def start(self) -> Observer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with self.engine.connect() as conn:
                previous_start = None
                while not self._stop.is_set():
                    t0 = time.perf_counter()
                    result = conn.execute(self.query, self.params)
                    if self.ids:
                        rows = [r[0] for r in result]
                        t1 = time.perf_counter()
                        for job_id in rows:
                            if job_id not in self.exclude and job_id not in self.seen:
                                self.seen[job_id] = t1
                        self.count = len(self.seen)
                    else:
                        self.count = int(result.scalar() or 0)
                        t1 = time.perf_counter()
                    self.query_s.append(t1 - t0)
                    if self.count >= self.target:
                        self.seen_at, self.window_from = t1, previous_start if previous_start is not None else t0
                        break
                    previous_start = t0
                    self._stop.wait(max(0.0, self.interval - (time.perf_counter() - t0)))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float = 3600) -> float:
        """``perf_counter`` when every job was first seen finished (exits on a timeout)."""
        if not self._done.wait(timeout):
            self.stop()
            raise SystemExit(f"only {self.count} of {self.target} jobs seen finished after {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        assert self.seen_at is not None
        return self.seen_at

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()

    def stats(self, began: float) -> dict[str, Any]:
        """The observation, in seconds from ``began`` (a ``perf_counter``)."""
        return {"observe_poll_s": self.interval, "observe_polls": len(self.query_s),
                "observe_query_median_ms": statistics.median(self.query_s) * 1000 if self.query_s else None,
                "observe_window_s": (self.seen_at - self.window_from) if self.seen_at and self.window_from else None,
                "observe_lower_s": (self.window_from - began) if self.window_from else None}


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


def run_sweep(svc: Service, jobs: int, poll: float = POLL) -> dict[str, Any]:
    """Submit the sweep, wait until a poll of committed rows sees every job finished, check the
    stored rows, read the summary."""
    client = Client(svc.port)
    request = {"base": BASE, "starts": {"count": jobs, "init": "uniform", "low": LOW, "high": HIGH, "seed": 0},
               "name": "bench-sweep"}
    began, began_epoch = time.perf_counter(), time.time()
    answer = client.call("POST", "/v1/sweeps", request)
    accepted = time.perf_counter() - began
    sweep_id = answer["id"]
    # the POST answers once the jobs exist, long before the first of them can end
    observer = Observer(svc.settings.database_url,
                        f"SELECT count(*) FROM jobs WHERE sweep_id = :s AND status IN {FINISHED_SQL}",
                        {"s": sweep_id}, jobs, interval=poll).start()
    try:
        seen = observer.wait()
    finally:
        observer.stop()
    wall = seen - began
    counts = client.call("GET", f"/v1/sweeps/{sweep_id}?limit=1")["counts"]
    if counts.get("succeeded", 0) != jobs:
        raise SystemExit(f"sweep {sweep_id}: not every job succeeded: {counts}")

    db = svc.db()
    try:
        with db.session() as s:
            # every job's stored rows against what its record rule keeps for the steps it ran
            per_job = s.execute(text(
                "SELECT j.id, j.result, (SELECT coalesce(sum(n_rows), 0) FROM history_chunks h WHERE h.job_id = j.id) "
                "FROM jobs j WHERE j.sweep_id = :s"), {"s": sweep_id}).all()
            last_finished = s.execute(text("SELECT max(finished_at) FROM jobs WHERE sweep_id = :s"),
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
    # sweep_s: from just before the POST until the poll first saw every job finished (this
    # process's clock). stamp_s, the last finished_at the service wrote, is for comparison only.
    stamp = last_finished.timestamp() - began_epoch if last_finished is not None else None
    return {"sweep_id": sweep_id, "jobs": jobs, "sweep_s": wall, "observed_s": wall, "stamp_s": stamp,
            "accepted_s": accepted, **observer.stats(began), "rows": stored, "rows_expected": expected,
            "rows_per_job": expected // jobs if jobs else 0, "all_full_runs": all(n == STEPS for n in steps),
            "summary_ms": summary_ms, "best_f": best.get("f"), "best_steps_to_tolerance": best.get("steps_to_tolerance")}


def measure(jobs: int = 10_000, solo: int = 100, workers: int = 1, batch_max: int | None = None,
            log: Any = None, poll: float = POLL) -> dict[str, Any]:
    say = log or (lambda *a: None)
    with running_service(workers, batch_max, prefix="descent-sweep-") as svc:
        warm = Client(svc.port)
        warm.wait(warm.call("POST", "/v1/jobs", solo_specs(1, seed=99)[0])["id"])  # both paths once
        warm.close()
        say(f"one at a time: {solo} jobs ...")
        solo_times = one_at_a_time(svc, solo)
        mean = statistics.mean(solo_times)
        say(f"  mean {mean * 1000:.1f} ms/job; sweep of {jobs:,} jobs ...")
        sweep = run_sweep(svc, jobs, poll)
    scaled = mean * jobs
    out = {**sweep, "workers": workers, "batch_max": batch_max, "solo_jobs": solo, "solo_mean_s": mean,
           "solo_median_s": statistics.median(solo_times), "solo_scaled_s": scaled, "ratio": scaled / sweep["sweep_s"]}
    say(f"  sweep {sweep['sweep_s']:.2f} s seen finished by a {poll * 1000:.0f} ms poll ({jobs / sweep['sweep_s']:.0f} jobs/s), "
        f"ratio {out['ratio']:.1f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--solo", type=int, default=100, help="one-at-a-time sample size (scaled to --jobs)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-max", type=int, default=None, help=f"{BATCH_ENV} for the workers (default: the service's)")
    parser.add_argument("--poll", type=float, default=POLL,
                        help="seconds between polls of committed rows: the end time's resolution (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON line of results only")
    args = parser.parse_args()
    log = None if args.json else (lambda *a: print(*a, flush=True))
    out = measure(args.jobs, args.solo, args.workers, args.batch_max, log, args.poll)
    if args.json:
        print(json.dumps(out))
        return
    print(f"PostgreSQL + Redis, {args.workers} worker(s), {BATCH_ENV}={args.batch_max if args.batch_max is not None else 'default'}")
    print(f"Rosenbrock, {STEPS} SGD steps (lr 1e-3), every {EVERY}th row and the last recorded, x recorded")
    print(f"one at a time: a sample of {out['solo_jobs']} jobs, mean {out['solo_mean_s'] * 1000:.1f} ms "
          f"(median {out['solo_median_s'] * 1000:.1f} ms), scaled to {out['jobs']:,} jobs: {out['solo_scaled_s']:.1f} s")
    print(f"sweep of {out['jobs']:,} jobs: {out['sweep_s']:.2f} s from POST until a poll of committed rows every "
          f"{out['observe_poll_s'] * 1000:.0f} ms (the resolution) saw every job finished (answered in "
          f"{out['accepted_s'] * 1000:.0f} ms); {out['rows']:,} rows stored = {out['rows_expected']:,} expected; "
          f"summary ?sort=f in {out['summary_ms']:.0f} ms")
    print(f"  {out['observe_polls']} polls, query median {out['observe_query_median_ms']:.1f} ms; the end became visible "
          f"between {out['observe_lower_s']:.2f} s and {out['sweep_s']:.2f} s; the last finished_at stamp says "
          f"{out['stamp_s']:.2f} s (not used)")
    print(f"ratio one-at-a-time / sweep = {out['ratio']:.1f}  (target >= 200)")


if __name__ == "__main__":
    main()
