"""The fleet as the database sees it: each worker's heartbeat row, for the workers view
(``GET /v1/workers``), for routing ``device: auto`` jobs, and for the tests and benchmarks that
wait for workers to start.

A worker is alive while it heartbeats; after ``lost_after`` missed heartbeats it is shown lost
(since its last heartbeat plus those missed beats). A worker that shuts down cleanly is shown
stopped (since ``stopped_at``): its row stays, so the fleet still knows when a GPU worker last
heartbeat while the next one starts, and it heartbeating again under the same id makes it alive.
A lost or stopped worker's row is pruned after the retention period, counted from when it was
lost or stopped, and its counters are folded into the retired ones. A lost worker's job is
reclaimed through its lease (``jobs.requeue_if_stale``), which clears the worker's ``current_job``.
Pruning never waits on a locked row (a worker frozen inside a write keeps its rows locked): it
skips locked worker rows and waits at most ``PRUNE_LOCK_WAIT_MS`` for any other lock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, text, update

from service.store import counters
from service.store.db import Database, as_utc, clock
from service.store.models import Job, Worker
from service.store.records import WorkerRecord
from service.status import JobStatus


# How long pruning waits for a row lock (PostgreSQL) before it leaves the rest for its next pass.
PRUNE_LOCK_WAIT_MS = 1000


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
    """Register the worker or renew its row; a stopped row of the same id comes back alive."""
    now = clock(db.dialect)
    described = {"queues": beat.queues, "device": beat.device, "current_job": beat.current_job,
                 "device_name": beat.device_name, "cuda_memory": beat.cuda_memory, "versions": beat.versions}
    with db.session() as s:
        if s.execute(update(Worker).where(Worker.id == beat.worker_id)
                     .values(last_heartbeat=now, stopped_at=None, **described)).rowcount == 0:
            s.add(Worker(id=beat.worker_id, hostname=beat.hostname, pid=beat.pid, started_at=now,
                         last_heartbeat=now, jobs_done=0, **described))


def stop_worker(db: Database, worker_id: str) -> None:
    """The worker leaves cleanly: its row is marked stopped, not deleted, so its last heartbeat
    still counts for ``gpu_worker_seen`` (a restart's gap is no reason to fail gpu jobs)."""
    with db.session() as s:
        s.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=clock(db.dialect)))


def list_workers(db: Database, alive_within: float) -> list[WorkerRecord]:
    """Every worker: alive if it heartbeat within ``alive_within`` seconds and has not stopped,
    stopped (since ``stopped_at``) if it left cleanly, else lost since its last heartbeat plus
    ``alive_within``. A ``current_job`` is shown only while that job is running on the worker."""
    now = clock(db.dialect)
    alive = and_(Worker.stopped_at.is_(None),
                 Worker.last_heartbeat >= now - timedelta(seconds=alive_within)).label("alive")
    job = select(Job.id).where(Job.id == Worker.current_job, Job.worker == Worker.id,
                               Job.status == JobStatus.RUNNING).scalar_subquery().label("running")
    with db.session() as s:
        rows = s.execute(select(Worker, alive, job).order_by(Worker.id)).all()
        return [WorkerRecord(r.id, r.hostname, r.pid, list(r.queues), r.device, as_utc(r.started_at),
                             as_utc(r.last_heartbeat), running, bool(is_alive),
                             None if is_alive or r.stopped_at is not None
                             else as_utc(r.last_heartbeat) + timedelta(seconds=alive_within),
                             r.device_name, r.cuda_memory, r.versions, r.jobs_done or 0,
                             stopped_at=as_utc(r.stopped_at))
                for r, is_alive, running in rows]


def prune_workers(db: Database, lost_for: float, alive_within: float = 0.0) -> int:
    """Delete the rows of workers lost or stopped for ``lost_for`` seconds (a worker is lost
    ``alive_within`` seconds after its last heartbeat), folding their counters into the retired
    ones in the same transaction (``/metrics`` totals are unchanged); how many went."""
    now = clock(db.dialect)
    gone = or_(Worker.stopped_at < now - timedelta(seconds=lost_for),
               and_(Worker.stopped_at.is_(None),
                    Worker.last_heartbeat < now - timedelta(seconds=lost_for + alive_within)))
    doomed = select(Worker.id).where(gone).with_for_update(skip_locked=True).correlate(None)
    with db.session() as s:
        if db.dialect == "postgresql":
            # A worker frozen inside a write still holds its rows (its counters among them): wait
            # for none of them longer than this; the next pass prunes it (StoreUnavailable meanwhile).
            s.execute(text(f"SET LOCAL lock_timeout = '{PRUNE_LOCK_WAIT_MS}ms'"))
        pruned = list(s.scalars(delete(Worker).where(Worker.id.in_(doomed)).returning(Worker.id)
                                .execution_options(synchronize_session=False)))
        counters.retire(s, pruned)
    return len(pruned)


def live_gpu_worker(db: Database, alive_within: float) -> bool:
    """Is a GPU worker heartbeating (and not stopped)? ``device: auto`` jobs go to the gpu queue
    only then."""
    return _gpu_heartbeat_within(db, alive_within, stopped_too=False)


def gpu_worker_seen(db: Database, within: float) -> bool:
    """Did a GPU worker heartbeat within ``within`` seconds, stopped ones included? A gpu job
    fails for want of a GPU worker only when none has: a worker that stopped a moment ago (a
    restart) still says the queue is served."""
    return _gpu_heartbeat_within(db, within, stopped_too=True)


def _gpu_heartbeat_within(db: Database, within: float, stopped_too: bool) -> bool:
    query = select(Worker.queues).where(Worker.last_heartbeat >= clock(db.dialect) - timedelta(seconds=within))
    if not stopped_too:
        query = query.where(Worker.stopped_at.is_(None))
    with db.session() as s:
        rows = s.execute(query).all()
    return any("gpu" in (q or []) for (q,) in rows)
