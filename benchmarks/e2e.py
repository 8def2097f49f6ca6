"""The whole service against the bare engine, in the same run.

    python benchmarks/e2e.py [--jobs 200] [--workers 2] [--backend postgres|embedded] [--poll 0.05]

Starts the API and worker processes (PostgreSQL + Redis by default), then:
1. burst: submits ``--jobs`` lesson-sized jobs (500 SGD steps, 2x2 parameters, every row
   recorded) from 8 client threads; jobs/second from the first submit until a client sees the
   last one finished, and submit-to-seen-finished latency percentiles under that load. "Sees":
   a poll of committed rows (the ids of finished jobs, on a connection of its own in autocommit,
   every ``--poll`` seconds, 0.05 by default) timed by this process's clock when a job first
   appears; the interval is the measurement's resolution. Never ``finished_at``, a stamp the
   service writes about itself;
2. one at a time: ``--serial`` jobs, each submitted only after the last succeeded, the client
   waiting with ``GET /v1/jobs/<id>?wait=30``; the latency p50/p95 of a job on an idle service.
   Both phases use a light client (http.client, keep-alive): its CPU is not the service's;
3. the bare engine: the same jobs run by ``service.engine.run`` in this process, one after another,
   keeping every history row in memory, alternating with (1) and (2).
Ratios are printed against (3).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from service.engine import run  # noqa: E402
from service.spec import check_spec  # noqa: E402
from service.status import FINISHED, JobStatus  # noqa: E402
from service.store.models import Job  # noqa: E402
from testkit.processes import Service, service_on  # noqa: E402
from sweep import FINISHED_SQL, POLL, Observer  # noqa: E402  (benchmarks/sweep.py)

LESSON = {"objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w", "x0": [[5, 10], [1, 2]],
          "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bare_engine(n: int) -> tuple[float, list[float]]:
    torch.set_num_threads(1)
    per_job = []
    checked = check_spec(LESSON)
    began = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        rows = []
        run(checked, on_chunk=rows.append)
        per_job.append(time.perf_counter() - t0)
    return time.perf_counter() - began, per_job


def call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> dict:
    """One request on a keep-alive connection; its JSON answer, or exit unless the status is the
    expected one (202 for a submit, 200 otherwise)."""
    conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    if resp.status != (202 if method == "POST" else 200):
        raise SystemExit(f"{method} {path}: {resp.status} {payload}")
    return payload


def burst(service: Service, n: int, poll: float = POLL) -> tuple[float, list[float]]:
    """The load generator is kept light, as its CPU comes out of the same two cores as the
    service's: keep-alive http.client, one connection per thread, and no per-job requests. One
    thread polls committed rows every ``poll`` seconds (the ids of finished jobs, one cheap
    query) and notes when each job is first seen finished: that is each job's end, and the
    burst's is the last one's."""
    submitted: dict[str, float] = {}
    body = json.dumps(LESSON).encode()
    local = threading.local()

    def submit(_: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", service.port)
        t0 = time.perf_counter()
        submitted[call(conn, "POST", "/v1/jobs", body)["id"]] = t0

    db = service.db()
    with db.session() as s:  # every earlier job has finished (each burst waits for its own)
        before = set(s.scalars(select(Job.id)))
        unfinished = s.scalar(select(func.count()).select_from(Job).where(Job.status.not_in(FINISHED)))
    if unfinished:
        raise SystemExit(f"{unfinished} jobs unfinished before the burst")
    observer = Observer(service.settings.database_url, f"SELECT id FROM jobs WHERE status IN {FINISHED_SQL}",
                        None, n, interval=poll, ids=True, exclude=before)
    began = time.perf_counter()
    observer.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, range(n)))
        seen = observer.wait()
    finally:
        observer.stop()
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.status).where(Job.id.in_(list(submitted)))).all()
    db.engine.dispose()
    failed = [(job_id, status) for job_id, status in rows if status != JobStatus.SUCCEEDED]
    if failed:
        raise SystemExit(f"job {failed[0][0]} {failed[0][1]}: {service.job(failed[0][0])['error']}")
    if set(observer.seen) != set(submitted):
        raise SystemExit(f"{len(observer.seen)} jobs seen finished, {len(submitted)} submitted")
    wall = seen - began
    return wall, [observer.seen[j] - submitted[j] for j in submitted]


def serial(service: Service, n: int) -> tuple[list[float], list[float]]:
    """Submit, then ``GET /v1/jobs/<id>?wait=30`` until it has finished; the next job only then.
    The same light client as the burst (http.client on one keep-alive connection). Each job is
    followed by one bare engine run of the same spec; returns (latencies, bare times)."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port)
    body = json.dumps(LESSON).encode()
    latencies, bare = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        job_id = call(conn, "POST", "/v1/jobs", body)["id"]
        while call(conn, "GET", f"/v1/jobs/{job_id}?wait=30")["status"] not in FINISHED:
            pass
        latencies.append(time.perf_counter() - t0)
        bare.append(bare_engine(1)[0])
    conn.close()
    return latencies, bare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--serial", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="bursts (and bare runs); medians are reported")
    parser.add_argument("--backend", choices=["postgres", "embedded"], default="postgres")
    parser.add_argument("--poll", type=float, default=POLL,
                        help="seconds between polls of committed rows: the burst's resolution (default %(default)s)")
    args = parser.parse_args()

    services = service_on(args.backend, Path(tempfile.mkdtemp(prefix="descent-e2e-")))
    service = next(services)
    # Service and bare runs alternate (burst, bare, burst, bare, ...; serial job, bare job, ...):
    # this machine's speed drifts by 10-20% over minutes, so each ratio compares neighbours.
    bursts, bare_runs = [], []
    try:
        service.start(workers=args.workers)
        service.wait(service.submit(LESSON)["id"])  # warm both paths once
        service.wait(service.submit(LESSON)["id"])
        bare_engine(5)
        for _ in range(args.repeats):
            bursts.append(burst(service, args.jobs, args.poll))
            bare_runs.append(bare_engine(args.jobs))
        serial_lat, bare_one = serial(service, args.serial)
    finally:
        services.close()
    ratios = [(bare_wall / wall) for (wall, _), (bare_wall, _) in zip(bursts, bare_runs)]
    burst_lat = [t for _, lat in bursts for t in lat]
    p50, bare_p50 = statistics.median(serial_lat), statistics.median(bare_one)
    print(f"backend: {args.backend}, {args.workers} worker processes, {args.jobs} lesson jobs (500 SGD steps, 2x2, every row)")
    print(f"burst of {args.jobs} over HTTP vs the bare engine in one process, {args.repeats} alternating pairs "
          f"(each job's end: a poll of committed rows every {args.poll * 1000:.0f} ms first seeing it finished):")
    for (wall, _), (bare_wall, _), ratio in zip(bursts, bare_runs, ratios):
        print(f"  service {args.jobs / wall:6.1f} jobs/s, bare {args.jobs / bare_wall:6.1f} jobs/s -> {ratio:.2f}")
    print(f"  throughput ratio (median) {statistics.median(ratios):.2f}  (target >= 1.3)")
    print(f"  latency under the burst: p50 {statistics.median(burst_lat) * 1e3:.0f} ms, p95 {pct(burst_lat, 0.95) * 1e3:.0f} ms "
          f"(queueing included; resolution {args.poll * 1000:.0f} ms)")
    warm = statistics.median(t for _, per_job in bare_runs for t in per_job)
    print(f"one job at a time ({args.serial}): service p50 {p50 * 1e3:.1f} ms, p95 {pct(serial_lat, 0.95) * 1e3:.1f} ms")
    print(f"  bare job p50: {bare_p50 * 1e3:.1f} ms run alone after each service job, {warm * 1e3:.1f} ms in a warm loop")
    print(f"  p50 / bare job = {p50 / bare_p50:.2f} (alone), {p50 / warm:.2f} (warm loop, the stricter)  (target <= 1.5)")


if __name__ == "__main__":
    main()
