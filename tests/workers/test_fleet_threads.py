"""A worker's heartbeat runs on a thread (and a connection) of its own: a reconciler stuck on a
black-holed broker never stops it, so the worker stays alive and its jobs' leases renewed; after
its own heartbeat failed to reach the database, a worker gives the others a lease to renew theirs
before it reclaims any."""
from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from service.store import Database, StoreUnavailable, fleet
from service.store import jobs as job_store
from service.store.db import utcnow
from service.store.models import Job, Worker
from service.status import JobStatus
from tests.store.test_store import new_job
from workers import fleet as worker_fleet
from workers.state import WorkerState


class BlackHoledBroker:
    """A dispatcher whose broker takes every packet and answers none: any use of it hangs."""

    def __init__(self) -> None:
        self.entered, self.cut = threading.Event(), threading.Event()

    @property
    def celery(self) -> Any:
        self.entered.set()
        self.cut.wait(60)
        raise OSError("the broker did not answer")

    def send_message(self, message: Any) -> bool:
        return self.celery is None


def worker(app: Any, dispatcher: Any = None, **settings: Any) -> WorkerState:
    svc = app.extensions["descent"]
    return WorkerState(settings=dataclasses.replace(svc.settings, **settings), db=svc.db, worker_id="beat:1",
                       hostname="beat", queues=["cpu"], device="cpu", dispatcher=dispatcher)


def column(db: Any, what: Any, where: Any) -> Any:
    with db.session() as s:
        return s.scalar(select(what).where(where))


def test_the_heartbeat_goes_on_while_the_reconciler_waits_on_a_black_holed_broker(app):
    broker = BlackHoledBroker()
    state = worker(app, broker, heartbeat_seconds=0.05, requeue_after=0.3, lease_seconds=2.0)
    db = state.db
    job_id = new_job(db)
    job_store.claim_job(db, job_id, state.worker_id, 2.0, 3)
    state.current_job, state.current_jobs = job_id, [job_id]
    state.current_since = time.monotonic()  # just started: far from the hard time limit
    stop = threading.Event()
    threads = worker_fleet.start_threads(state, stop)
    try:
        assert broker.entered.wait(10), "the reconciler never asked the broker"
        beats, leases, deadline = set(), set(), time.monotonic() + 10
        while len(beats) < 4 or len(leases) < 4:  # beating and renewing while the reconciler hangs
            assert time.monotonic() < deadline, f"the heartbeat stopped: {beats}"
            beats.add(column(db, Worker.last_heartbeat, Worker.id == state.worker_id))
            leases.add(column(db, Job.lease_expires_at, Job.id == job_id))
            time.sleep(0.02)
        assert not broker.cut.is_set()  # the reconciler still hangs on the broker
        [me] = fleet.list_workers(db, alive_within=state.settings.worker_lost_seconds)
        assert me.alive and me.current_job == job_id
    finally:
        stop.set()
        broker.cut.set()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


def lapsed_job(db: Any, holder: str) -> str:
    job_id = new_job(db)
    job_store.claim_job(db, job_id, holder, 30, 3)
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=60)))
    return job_id


def test_after_its_heartbeat_failed_a_worker_reclaims_nothing_for_a_lease(app):
    state = worker(app, lease_seconds=30.0)
    job_id = lapsed_job(state.db, "other:2")
    state.store_fault_at = time.monotonic()  # the database just refused this worker's heartbeat too
    worker_fleet.reconcile_once(30, state)
    assert job_store.get_job(state.db, job_id).status == JobStatus.RUNNING
    state.store_fault_at = time.monotonic() - 31  # a lease later: the holder had its chance to renew
    worker_fleet.reconcile_once(30, state)
    assert job_store.get_job(state.db, job_id).status == JobStatus.QUEUED


def test_a_heartbeat_failure_is_remembered(app, monkeypatch):
    state = worker(app, heartbeat_seconds=0.02)
    stop = threading.Event()

    def refuse(*_: Any) -> None:
        stop.set()
        raise StoreUnavailable("the database is read-only")

    monkeypatch.setattr(fleet, "heartbeat", refuse)
    thread = threading.Thread(target=worker_fleet._beating, args=(state, stop, Database(state.db.url)), daemon=True)
    thread.start()
    thread.join(10)
    assert state.store_fault_at is not None and not worker_fleet.reclaiming(state)
