"""A worker frozen (SIGSTOP) or cut off inside one of its write transactions keeps its rows locked
until the server ends its session. Nothing another worker does waits on those locks (PostgreSQL):
the job is skipped at once, reclaimed as soon as the lock goes, and the frozen worker's later
writes are fenced."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.rows import HistoryRows
from service.store import LeaseLost
from service.store import fleet
from service.store import jobs as job_store
from service.store.history import save_chunk
from service.store.models import Job, Worker
from service.status import JobStatus
from tests.store.test_store import new_job

T = TypeVar("T")
FROZEN, OTHER = "frozen:1", "other:2"


def promptly(fn: Callable[[], T], seconds: float = 5.0) -> T:
    """``fn()``, which must return within ``seconds`` (it must not wait on a locked row)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn} waited on a locked row"
    return out[0]


@pytest.fixture
def frozen(pg_db) -> Iterator[Callable[[], Session]]:  # type: ignore[no-untyped-def]
    """Sessions of a frozen worker: transactions left open (ended by the test, or rolled back at teardown)."""
    opened: list[Session] = []

    def open_session() -> Session:
        opened.append(Session(pg_db.engine))
        return opened[-1]

    yield open_session
    for s in opened:
        s.rollback()
        s.close()


def lapse(db: Any, job_id: str) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=Job.created_at - timedelta(seconds=60)))


def held_by_frozen_worker(db: Any, frozen: Callable[[], Session]) -> tuple[str, Session]:
    """A job of FROZEN's with a lapsed lease, FROZEN stopped inside a chunk's write transaction
    (its renewal made, not committed: the job's row locked)."""
    job_id = new_job(db)
    assert job_store.claim_job(db, job_id, FROZEN, 30, 3) is not None
    lapse(db, job_id)
    s = frozen()
    assert job_id in job_store.renew_jobs(db, [job_id], FROZEN, 30, session=s)
    return job_id, s


def rows(steps: range) -> HistoryRows:
    n = len(steps)
    return HistoryRows(steps=list(steps), f=[1.0] * n, grad_norm=[1.0] * n, lr=[0.1] * n)


def test_reclaim_skips_a_job_a_frozen_worker_holds_locked_and_takes_it_once_the_lock_goes(pg_db, frozen):
    job_id, s = held_by_frozen_worker(pg_db, frozen)
    assert promptly(lambda: job_store.requeue_if_stale(pg_db, job_id, 30)) is False
    assert promptly(lambda: job_store.claim_job(pg_db, job_id, OTHER, 30, 3)) is None
    assert job_store.get_job(pg_db, job_id).status == JobStatus.RUNNING
    s.rollback()  # the server ends the frozen worker's session: its transaction is rolled back
    assert job_store.requeue_if_stale(pg_db, job_id, 30) is True
    assert job_store.get_job(pg_db, job_id).status == JobStatus.QUEUED
    # the frozen worker wakes up: everything it writes now is fenced
    with pytest.raises(LeaseLost):
        save_chunk(pg_db, job_id, FROZEN, rows(range(0, 5)), b"checkpoint", 5, 30)
    with pytest.raises(LeaseLost):
        job_store.renew(pg_db, job_id, FROZEN, 30)
    claimed = job_store.claim_job(pg_db, job_id, OTHER, 30, 3)
    assert claimed is not None and claimed.worker == OTHER and claimed.attempts == 2
    with pytest.raises(LeaseLost):
        job_store.finish_job(pg_db, job_id, FROZEN, JobStatus.SUCCEEDED, {"steps": 5}, None)


def test_a_frozen_worker_whose_write_commits_after_all_keeps_its_job(pg_db, frozen):
    job_id, s = held_by_frozen_worker(pg_db, frozen)
    assert promptly(lambda: job_store.requeue_if_stale(pg_db, job_id, 30)) is False
    s.commit()  # SIGCONT before the server gave up on it: its renewal stands, nobody took the job
    assert job_store.requeue_if_stale(pg_db, job_id, 30) is False
    job = job_store.get_job(pg_db, job_id)
    assert (job.status, job.worker) == (JobStatus.RUNNING, FROZEN)


def test_a_reclaim_does_not_wait_for_the_lost_workers_own_row(pg_db, frozen):
    """Frozen inside a job's ending, the worker's row is locked too (its jobs_done): the reclaim of
    its other, lapsed job still goes through, leaving its current_job for the next heartbeat."""
    job_id = new_job(pg_db)
    job_store.claim_job(pg_db, job_id, FROZEN, 30, 3)
    fleet.heartbeat(pg_db, fleet.Heartbeat(FROZEN, "h", 1, ["cpu"], "cpu", current_job=job_id))
    lapse(pg_db, job_id)
    s = frozen()
    s.execute(update(Worker).where(Worker.id == FROZEN).values(jobs_done=Worker.jobs_done + 1))
    assert promptly(lambda: job_store.requeue_if_stale(pg_db, job_id, 30)) is True
    assert job_store.get_job(pg_db, job_id).status == JobStatus.QUEUED


def test_the_reconcilers_other_writes_skip_locked_rows(pg_db, frozen):
    """Failing gpu jobs no worker came for, and pruning lost workers, skip what a frozen worker
    holds locked (a queued job it was claiming, its own row) and take it on a later pass."""
    gpu_job = new_job(pg_db)
    with pg_db.session() as s:
        job = s.get(Job, gpu_job)
        job.queue, job.created_at = "gpu", job.created_at - timedelta(hours=2)
    fleet.heartbeat(pg_db, fleet.Heartbeat(FROZEN, "h", 1, ["cpu"], "cpu"))
    with pg_db.session() as s:
        s.execute(update(Worker).where(Worker.id == FROZEN).values(last_heartbeat=Worker.last_heartbeat - timedelta(days=3)))
    s = frozen()
    s.execute(select(Job.id).where(Job.id == gpu_job).with_for_update())
    s.execute(select(Worker.id).where(Worker.id == FROZEN).with_for_update())
    assert promptly(lambda: job_store.fail_unserved(pg_db, "gpu", 60, "no gpu")) == []
    assert promptly(lambda: fleet.prune_workers(pg_db, 3600)) == 0
    s.rollback()
    assert job_store.fail_unserved(pg_db, "gpu", 60, "no gpu") == [gpu_job]
    assert fleet.prune_workers(pg_db, 3600) == 1


def test_a_claim_skips_a_queued_job_another_transaction_holds(pg_db, frozen):
    job_id = new_job(pg_db)
    s = frozen()
    s.execute(select(Job.id).where(Job.id == job_id).with_for_update())
    assert promptly(lambda: job_store.claim_job(pg_db, job_id, OTHER, 30, 3)) is None
    s.rollback()
    assert job_store.claim_job(pg_db, job_id, OTHER, 30, 3) is not None


def test_the_heartbeats_renewal_skips_the_rows_its_own_chunk_holds(pg_db, frozen):
    """The run thread's chunk transaction holds the job's row; the heartbeat's renewal of the
    same worker's jobs renews the others at once and never waits (a wait past the lock timeout
    read as the database failing, and stopped the worker reclaiming for a lease)."""
    busy, free = new_job(pg_db), new_job(pg_db)
    for job_id in (busy, free):
        assert job_store.claim_job(pg_db, job_id, FROZEN, 30, 3) is not None
    chunk = frozen()
    job_store.renew_jobs(pg_db, [busy], FROZEN, 30, session=chunk)  # locks busy's row, not committed
    renewed = promptly(lambda: job_store.renew_jobs(pg_db, [busy, free], FROZEN, 30, skip_locked=True))
    assert renewed == {free: False}
    chunk.commit()
    assert job_store.renew_jobs(pg_db, [busy, free], FROZEN, 30, skip_locked=True) == {busy: False, free: False}
