"""Soak: many jobs of varied length while a helper kill -9s a random worker every few seconds.

    python benchmarks/soak.py [--jobs 500] [--workers 3] [--kill-every 3] [--seconds 600] [--kill-for S]

Runs on a private PostgreSQL cluster and Redis server (as the fault tests do), with short leases.
Reports jobs submitted / succeeded / failed / lost, duplicate steps, gaps, and jobs whose final x
differs from an uninterrupted in-process solo run (beyond 1e-6 relative; how many are equal but
not bit for bit, as a batched job may be, is reported apart). Target: 0 lost, 0 duplicates,
0 gaps, 0 mismatches. Bounded in time: it stops killing at ``--kill-for`` (default: never) and
gives up waiting at ``--seconds``; a job still open then counts as lost.
"""
from __future__ import annotations

import argparse
import math
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from service.config import normalise_database_url  # noqa: E402
from service.engine import run  # noqa: E402
from service.spec import check_spec  # noqa: E402
from service.store.models import history_rows, Job  # noqa: E402
from testkit.backends import embedded_settings  # noqa: E402
from testkit.processes import Service  # noqa: E402
from testkit.servers import PrivatePostgres, PrivateRedis  # noqa: E402
from service.status import FINISHED, JobStatus  # noqa: E402

OPTIMIZERS = [{"name": "sgd", "lr": 1e-4, "momentum": 0.9}, {"name": "adam", "lr": 1e-3},
              {"name": "rmsprop", "lr": 1e-4}, {"name": "adagrad", "lr": 0.05}]


def make_spec(i: int, rng: random.Random) -> dict:
    return {"objective": {"name": "rosenbrock"}, "x0": [rng.uniform(-2, 2), rng.uniform(-1, 3)],
            "steps": rng.choice([200, 1_000, 3_000, 8_000, 20_000]), "record": {"every": rng.choice([1, 7, 50])},
            "optimizer": rng.choice(OPTIMIZERS), "seed": i}


# A job that ran in a batch equals its solo run within this (float32), bit for bit where the
# kernels round alike (tests/engine/test_batched.py); a job that ran alone, bit for bit.
BATCHED_RTOL = 1e-6


def same_x(a: list, b: list) -> bool:
    return all(math.isclose(u, v, rel_tol=BATCHED_RTOL, abs_tol=0.0) for u, v in zip(a, b)) and len(a) == len(b)


def expected_steps(spec: dict, last: int) -> list[int]:
    every = spec["record"]["every"]
    steps = list(range(0, last + 1, every))
    return steps if steps[-1] == last else steps + [last]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--kill-for", type=float, default=None,
                        help="stop killing after this many seconds (default: until --seconds), then let the jobs finish")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    torch.set_num_threads(1)

    pg, broker = PrivatePostgres(), PrivateRedis()
    pg.start()
    broker.start()
    tmp = Path(tempfile.mkdtemp(prefix="descent-soak-"))
    settings = replace(embedded_settings(tmp, lease_seconds=3.0, heartbeat_seconds=0.5, requeue_after=3.0, max_attempts=20),
                       database_url=normalise_database_url(pg.url), broker_url=broker.url)
    service = Service(settings=settings, log_dir=tmp)
    began = time.time()
    kills = 0
    stop = threading.Event()
    try:
        service.start(workers=args.workers)
        specs = {}
        for i in range(args.jobs):
            spec = make_spec(i, rng)
            specs[service.submit(spec)["id"]] = spec

        def killer() -> None:
            nonlocal kills
            kill_until = began + (args.kill_for if args.kill_for is not None else args.seconds)
            while not stop.wait(args.kill_every * rng.uniform(0.5, 1.5)) and time.time() < kill_until:
                alive = [p for p in service.workers if p.poll() is None]
                if alive:
                    service.kill_worker(rng.choice(alive), signal.SIGKILL)
                    kills += 1
                service.start_worker()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        db = service.db()
        while time.time() - began < args.seconds:
            with db.session() as s:
                open_jobs = s.scalar(select(func.count()).select_from(Job).where(Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))))
            if open_jobs == 0:
                break
            time.sleep(1.0)
        stop.set()
        thread.join()
        elapsed = time.time() - began

        with db.session() as s:
            statuses = dict(s.execute(select(Job.id, Job.status)).all())
            results = dict(s.execute(select(Job.id, Job.result)).all())
            attempts = dict(s.execute(select(Job.id, Job.attempts)).all())
            dup_rows = s.execute(select(history_rows.c.job_id, func.count(), func.count(func.distinct(history_rows.c.step)))
                                 .group_by(history_rows.c.job_id)).all()
        duplicates = sum(total - distinct for _, total, distinct in dup_rows)
        succeeded = [j for j, st in statuses.items() if st == JobStatus.SUCCEEDED]
        failed = [j for j, st in statuses.items() if st == JobStatus.FAILED]
        lost = [j for j in specs if statuses.get(j) not in FINISHED]
        gaps = mismatches = inexact = 0
        for job_id in succeeded:
            spec = specs[job_id]
            with db.session() as s:
                steps = list(s.scalars(select(history_rows.c.step).where(history_rows.c.job_id == job_id).order_by(history_rows.c.step)))
            if steps != expected_steps(spec, results[job_id]["steps"]):
                gaps += 1
            clean = run(check_spec(spec))
            if clean.steps != results[job_id]["steps"] or not same_x(clean.x, results[job_id]["x"]):
                mismatches += 1
            elif clean.x != results[job_id]["x"]:
                inexact += 1
        retried = sum(1 for j in succeeded if attempts[j] > 1)
        db.engine.dispose()
    finally:
        stop.set()
        service.stop()
        broker.close()
        pg.close()
    print(f"soak: {args.jobs} jobs, {args.workers} workers, a kill -9 every ~{args.kill_every:g}s "
          f"({kills} kills) in {elapsed:.0f}s")
    print(f"  submitted {len(specs)}  succeeded {len(succeeded)}  failed {len(failed)}  lost {len(lost)}")
    print(f"  resumed after a kill: {retried}; duplicate steps {duplicates}; jobs with gaps {gaps}; "
          f"final x differs from a clean run: {mismatches} (equal within {BATCHED_RTOL:g} relative but not bit for "
          f"bit, as a batch may round: {inexact})")


if __name__ == "__main__":
    main()
