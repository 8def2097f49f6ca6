"""Worker heartbeats: the fleet as the database sees it, for routing ``device: auto`` jobs and
for the tests and benchmarks that wait for workers to start."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from service.store.db import Database, as_utc, clock
from service.store.models import Worker
from service.store.records import WorkerRecord


def heartbeat(db: Database, worker_id: str, hostname: str, pid: int, queues: list[str], device: str,
              current_job: str | None) -> None:
    now = clock(db.dialect)
    with db.session() as s:
        row = s.get(Worker, worker_id)
        if row is None:
            s.add(Worker(id=worker_id, hostname=hostname, pid=pid, queues=queues, device=device,
                         started_at=now, last_heartbeat=now, current_job=current_job))
        else:
            row.last_heartbeat, row.current_job, row.queues, row.device = now, current_job, queues, device


def remove_worker(db: Database, worker_id: str) -> None:
    with db.session() as s:
        s.execute(delete(Worker).where(Worker.id == worker_id))


def list_workers(db: Database, alive_within: float) -> list[WorkerRecord]:
    alive = (Worker.last_heartbeat >= clock(db.dialect) - timedelta(seconds=alive_within)).label("alive")
    with db.session() as s:
        rows = s.execute(select(Worker, alive).order_by(Worker.id)).all()
        return [WorkerRecord(r.id, r.hostname, r.pid, list(r.queues), r.device, as_utc(r.started_at),
                             as_utc(r.last_heartbeat), r.current_job, bool(is_alive))
                for r, is_alive in rows]


def live_gpu_worker(db: Database, alive_within: float) -> bool:
    """Is a GPU worker heartbeating? ``device: auto`` jobs go to the gpu queue only then."""
    cutoff = clock(db.dialect) - timedelta(seconds=alive_within)
    with db.session() as s:
        rows = s.execute(select(Worker.queues).where(Worker.last_heartbeat >= cutoff)).all()
    return any("gpu" in (q or []) for (q,) in rows)
