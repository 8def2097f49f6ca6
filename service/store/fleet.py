"""The fleet as the database sees it: each worker's heartbeat row, for the workers view
(``GET /v1/workers``), for routing ``device: auto`` jobs, and for the tests and benchmarks that
wait for workers to start.

A worker is alive while it heartbeats; after ``lost_after`` missed heartbeats it is shown lost
(since its last heartbeat plus those missed beats), and a lost worker's row is pruned after the
retention period. A lost worker's job is reclaimed through its lease (``jobs.requeue_if_stale``),
which clears the worker's ``current_job``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, select, update

from service.store.db import Database, as_utc, clock
from service.store.models import Job, Worker
from service.store.records import WorkerRecord
from service.store.status import JobStatus


@dataclass(frozen=True)
class Heartbeat:
    """What a worker says of itself at each heartbeat."""

    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    device: str  # the queue kind it serves: cpu or gpu
    current_job: str | None = None
    device_name: str | None = None
    cuda_memory: int | None = None
    versions: dict[str, str] = field(default_factory=dict)


def heartbeat(db: Database, beat: Heartbeat) -> None:
    now = clock(db.dialect)
    described = {"queues": beat.queues, "device": beat.device, "current_job": beat.current_job,
                 "device_name": beat.device_name, "cuda_memory": beat.cuda_memory, "versions": beat.versions}
    with db.session() as s:
        if s.execute(update(Worker).where(Worker.id == beat.worker_id)
                     .values(last_heartbeat=now, **described)).rowcount == 0:
            s.add(Worker(id=beat.worker_id, hostname=beat.hostname, pid=beat.pid, started_at=now,
                         last_heartbeat=now, jobs_done=0, **described))


def remove_worker(db: Database, worker_id: str) -> None:
    with db.session() as s:
        s.execute(delete(Worker).where(Worker.id == worker_id))


def list_workers(db: Database, alive_within: float) -> list[WorkerRecord]:
    """Every worker, alive if it heartbeat within ``alive_within`` seconds (else lost since then).
    A ``current_job`` is shown only while that job is running on the worker."""
    now = clock(db.dialect)
    alive = (Worker.last_heartbeat >= now - timedelta(seconds=alive_within)).label("alive")
    job = select(Job.id).where(Job.id == Worker.current_job, Job.worker == Worker.id,
                               Job.status == JobStatus.RUNNING).scalar_subquery().label("running")
    with db.session() as s:
        rows = s.execute(select(Worker, alive, job).order_by(Worker.id)).all()
        return [WorkerRecord(r.id, r.hostname, r.pid, list(r.queues), r.device, as_utc(r.started_at),
                             as_utc(r.last_heartbeat), running, bool(is_alive),
                             None if is_alive else as_utc(r.last_heartbeat) + timedelta(seconds=alive_within),
                             r.device_name, r.cuda_memory, r.versions, r.jobs_done or 0)
                for r, is_alive, running in rows]


def prune_workers(db: Database, lost_for: float) -> int:
    """Delete the rows of workers that have not heartbeat for ``lost_for`` seconds; how many."""
    with db.session() as s:
        return s.execute(delete(Worker).where(
            Worker.last_heartbeat < clock(db.dialect) - timedelta(seconds=lost_for))).rowcount or 0


def live_gpu_worker(db: Database, alive_within: float) -> bool:
    """Is a GPU worker heartbeating? ``device: auto`` jobs go to the gpu queue only then."""
    cutoff = clock(db.dialect) - timedelta(seconds=alive_within)
    with db.session() as s:
        rows = s.execute(select(Worker.queues).where(Worker.last_heartbeat >= cutoff)).all()
    return any("gpu" in (q or []) for (q,) in rows)
