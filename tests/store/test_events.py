"""Waiting for jobs to finish: woken by NOTIFY on PostgreSQL, by polling on SQLite.

The watcher's safety poll is set far above each wait, so on PostgreSQL a waiter only sees a
job finish in time if the notification reached it."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from service.store import Database, NotFound
from service.store import jobs as job_store
from service.store.events import FinishedJobs
from service.status import JobStatus

SPEC = {"objective": "x.sum()", "x0": [1, 2], "steps": 10}


@pytest.fixture
def watcher(db: Database):  # type: ignore[no-untyped-def]
    w = FinishedJobs(db, safety_poll=600)
    yield w
    w.close()


def listening(w: FinishedJobs, want: bool = True, timeout: float = 20) -> bool:
    w._ensure_listener()
    deadline = time.monotonic() + timeout
    while w.listening != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return w.listening == want


def woken(watcher: FinishedJobs, job_id: str) -> str:
    """Wait up to 20 s for a job that finishes after 0.3 s; fail if only the time limit ended it."""
    began = time.monotonic()
    status = watcher.wait(job_id, 20).status
    assert time.monotonic() - began < 15, "the waiter was not woken; it ran out its time"
    return status


def later(seconds: float, fn) -> threading.Thread:  # type: ignore[no-untyped-def]
    def go() -> None:
        time.sleep(seconds)
        fn()

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def running_job(db: Database) -> str:
    job, _ = job_store.create_job(db, SPEC, [2], "cpu")
    job_store.claim_job(db, job.id, "w1", 30, 3)
    return job.id


def test_a_waiter_sees_the_job_finish(db, watcher):
    if db.dialect == "postgresql":
        assert listening(watcher)
    job_id = running_job(db)
    t = later(0.3, lambda: job_store.finish_job(db, job_id, "w1", JobStatus.SUCCEEDED, {"f": 1.0}, None))
    assert woken(watcher, job_id) == JobStatus.SUCCEEDED
    t.join()


def test_cancelling_a_queued_job_wakes_its_waiters(db, watcher):
    if db.dialect == "postgresql":
        assert listening(watcher)
    job, _ = job_store.create_job(db, SPEC, [2], "cpu")
    t = later(0.3, lambda: job_store.request_cancel(db, job.id))
    assert woken(watcher, job.id) == JobStatus.CANCELLED
    t.join()


def test_a_wait_ends_with_the_current_status_when_time_is_up(db, watcher):
    job_id = running_job(db)
    began = time.monotonic()
    assert watcher.wait(job_id, 0.2).status == JobStatus.RUNNING
    assert time.monotonic() - began >= 0.2


def test_waiting_for_an_unknown_job_is_not_found(db, watcher):
    with pytest.raises(NotFound):
        watcher.wait("no-such-job", 1)


@pytest.mark.slow  # waits out a server's timeout or reconnect: seconds
def test_the_listener_comes_back_after_losing_its_connection(pg_db):
    db, watcher = pg_db, FinishedJobs(pg_db, safety_poll=600)
    assert listening(watcher)
    with db.engine.connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN descent_job_finished%' AND datname = current_database()")).scalar()
    assert killed == 1
    assert listening(watcher, want=False, timeout=5)  # it noticed...
    assert listening(watcher, want=True, timeout=20)  # ...and listens again
    job_id = running_job(db)
    t = later(0.3, lambda: job_store.finish_job(db, job_id, "w1", JobStatus.FAILED, None, "boom"))
    assert woken(watcher, job_id) == JobStatus.FAILED
    t.join()
    watcher.close()
