"""A burst of independent jobs with batching against the same burst without it, in one run.

    python benchmarks/burst.py [--jobs 200] [--workers 1] [--threads 8] [--spec rosenbrock|lesson] [--poll 0.05] [--json]

Twice, each time on a freshly started service (API + ``--workers`` worker processes on
PostgreSQL + Redis, a fresh database and Redis database each time): first with the workers
started with ``DESCENT_BATCH_MAX=1`` (batching off), then with the service's default
(``--batch-max`` sets another). Each time ``--jobs`` independent lesson-sized jobs are submitted
by ordinary ``POST /v1/jobs`` (not a sweep) from ``--threads`` client threads at once:

- ``rosenbrock`` (the default): the catalog Rosenbrock, 500 SGD steps at lr 1e-3, every 10th row
  recorded, each job from its own random start (as ``benchmarks/sweep.py``);
- ``lesson``: the lesson's 2x2 problem of ``benchmarks/e2e.py``, 500 SGD steps, every row.

The time runs from just before the first submit until a client *sees* every job finished: a poll
of committed rows (``SELECT count(*) FROM jobs WHERE status IN (finished)``, on a connection of its
own in autocommit, every ``--poll`` seconds, 0.05 by default, started before the first submit),
timed by this process's clock when a query first returns them all. The poll interval is the
measurement's resolution; both runs are measured the same way. It is never timed to a stamp the
service writes about itself (the last ``finished_at`` is reported beside it, for comparison only).
Every job must succeed. Prints both times and the ratio off / on (target >= 5).
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from service.store.models import Job  # noqa: E402
from service.status import FINISHED, JobStatus  # noqa: E402
from sweep import BATCH_ENV, FINISHED_SQL, POLL, Client, Observer, running_service, solo_specs  # noqa: E402
from testkit.processes import Service  # noqa: E402

LESSON = {"objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w", "x0": [[5, 10], [1, 2]],
          "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}}


def specs(kind: str, n: int, seed: int = 2) -> list[dict[str, Any]]:
    return [dict(LESSON) for _ in range(n)] if kind == "lesson" else solo_specs(n, seed=seed)


def burst(svc: Service, bodies: list[dict[str, Any]], threads: int, poll: float = POLL) -> dict[str, Any]:
    """Submit every body at once from ``threads`` keep-alive clients; wait until a poll of
    committed rows sees them all finished."""
    local = threading.local()
    submitted: list[str] = []
    encoded = [json.dumps(b).encode() for b in bodies]

    def submit(body: bytes) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
        conn.request("POST", "/v1/jobs", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        if resp.status != 202:
            raise SystemExit(f"POST /v1/jobs: {resp.status} {payload}")
        submitted.append(payload["id"])

    db = svc.db()
    try:
        with db.session() as s:  # the warm-up's jobs, all finished: a fresh database otherwise
            already = s.scalar(select(func.count()).select_from(Job))
            unfinished = s.scalar(select(func.count()).select_from(Job).where(Job.status.not_in(FINISHED)))
        if unfinished:
            raise SystemExit(f"{unfinished} jobs unfinished before the burst")
        observer = Observer(svc.settings.database_url, f"SELECT count(*) FROM jobs WHERE status IN {FINISHED_SQL}",
                            None, already + len(bodies), interval=poll)
        began, began_epoch = time.perf_counter(), time.time()
        observer.start()
        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(submit, encoded))
            submit_s = time.perf_counter() - began
            seen = observer.wait()
        finally:
            observer.stop()
        wall = seen - began
        with db.session() as s:
            rows = s.execute(select(Job.id, Job.status, Job.finished_at, Job.started_at, Job.worker)
                             .where(Job.id.in_(submitted))).all()
    finally:
        db.engine.dispose()
    failed = [(job_id, status) for job_id, status, *_ in rows if status != JobStatus.SUCCEEDED]
    if failed:
        raise SystemExit(f"job {failed[0][0]} {failed[0][1]}: {svc.job(failed[0][0]).get('error')}")
    if len(rows) != len(bodies):
        raise SystemExit(f"{len(rows)} of {len(bodies)} submitted jobs found")
    # for comparison only: the last finished_at the service wrote, on this machine's clock
    stamp = max(at.timestamp() for _, _, at, _, _ in rows) - began_epoch
    return {"jobs": len(rows), "wall_s": wall, "observed_s": wall, "stamp_s": stamp, "submit_s": submit_s,
            "jobs_per_s": len(rows) / wall, **observer.stats(began)}


def measure(jobs: int = 200, workers: int = 1, threads: int = 8, kind: str = "rosenbrock",
            batch_max: int | None = None, log: Any = None, poll: float = POLL) -> dict[str, Any]:
    """The burst with batching off (DESCENT_BATCH_MAX=1), then on (``batch_max``, or the
    service's default when None), each on a fresh service."""
    say = log or (lambda *a: None)
    out: dict[str, Any] = {"jobs": jobs, "workers": workers, "threads": threads, "spec": kind,
                           "batch_max_on": batch_max, "poll_s": poll}
    for label, value in (("off", 1), ("on", batch_max)):
        with running_service(workers, value, prefix=f"descent-burst-{label}-") as svc:
            warm = Client(svc.port)
            warm.wait(warm.call("POST", "/v1/jobs", specs(kind, 1, seed=99)[0])["id"])  # both paths once
            warm.close()
            out[label] = burst(svc, specs(kind, jobs), threads, poll)
        say(f"  {BATCH_ENV}={value if value is not None else 'default'}: {jobs} jobs seen finished in "
            f"{out[label]['wall_s']:.2f} s by a {poll * 1000:.0f} ms poll ({out[label]['jobs_per_s']:.1f} jobs/s; "
            f"last finished_at stamp {out[label]['stamp_s']:.2f} s, not used)")
    out["ratio"] = out["off"]["wall_s"] / out["on"]["wall_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8, help="client threads submitting")
    parser.add_argument("--spec", choices=["rosenbrock", "lesson"], default="rosenbrock")
    parser.add_argument("--batch-max", type=int, default=None,
                        help=f"{BATCH_ENV} of the batched run (default: the service's)")
    parser.add_argument("--poll", type=float, default=POLL,
                        help="seconds between polls of committed rows: the end time's resolution (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON line of results only")
    args = parser.parse_args()
    log = None if args.json else (lambda *a: print(*a, flush=True))
    out = measure(args.jobs, args.workers, args.threads, args.spec, args.batch_max, log, args.poll)
    if args.json:
        print(json.dumps(out))
        return
    print(f"burst of {args.jobs} independent {args.spec} jobs by POST /v1/jobs from {args.threads} threads, "
          f"{args.workers} worker(s), PostgreSQL + Redis")
    print(f"  from the first submit until a poll of committed rows every {args.poll * 1000:.0f} ms (the resolution) "
          "saw every job finished:")
    print(f"  batching off ({BATCH_ENV}=1): {out['off']['wall_s']:.2f} s; on "
          f"({BATCH_ENV}={args.batch_max if args.batch_max is not None else 'default'}): {out['on']['wall_s']:.2f} s")
    print(f"  ratio off / on = {out['ratio']:.2f}  (target >= 5)")


if __name__ == "__main__":
    main()
