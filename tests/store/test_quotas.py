"""Per-owner quotas in the store, on each backend: exact under concurrency, a sweep's jobs are one
submission, and a finished job keeps only what it stored of its reservation."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert, select

from service.config import Quotas
from service.store import HistoryRows
from service.store import jobs as job_store
from service.store.db import clock
from service.store.models import Job
from service.store.quotas import QuotaExceeded, check_quotas
from service.status import JobStatus
from tests.helpers.threads import at_once

SPEC = {"objective": "x.sum()", "x0": [1, 2], "steps": 10, "record": {"every": 1, "x": True, "grad": False}}
PER_ROW = 3 + 2  # f, grad_norm, lr and x's two values


def reserved(db, job_id: str) -> int:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return s.get(Job, job_id).reserved_values


def test_concurrent_submissions_never_pass_a_quota(db):
    quotas = Quotas(active_jobs=5)
    results = at_once(lambda: job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=1, quotas=quotas),
                      12, QuotaExceeded)
    refused = sum(isinstance(r, QuotaExceeded) for r in results)
    assert len(results) - refused == 5 and refused == 7


def test_an_idempotent_replay_is_not_a_new_submission(db):
    quotas = Quotas(submissions_per_minute=1)
    first, created = job_store.create_job(db, SPEC, [2], "cpu", "key", owner="alice", quotas=quotas)
    again, created_again = job_store.create_job(db, SPEC, [2], "cpu", "key", owner="alice", quotas=quotas)
    assert created and not created_again and again.id == first.id
    with pytest.raises(QuotaExceeded):
        job_store.create_job(db, SPEC, [2], "cpu", "other", owner="alice", quotas=quotas)


@pytest.mark.slow
def test_the_defaults_admit_a_10000_job_sweep_as_one_submission(db):
    """Jobs stored in one transaction share their created_at: one submission of 10,000 jobs."""
    per_job = (SPEC["steps"] + 2) * PER_ROW
    with db.session() as s:
        check_quotas(s, "alice", Quotas(), jobs=10_000, values=10_000 * per_job)
        now = s.scalar(select(clock(db.dialect))) if db.dialect == "postgresql" else clock(db.dialect)
        s.execute(insert(Job.__table__), [
            {"id": str(uuid.uuid4()), "owner": "alice", "status": JobStatus.QUEUED, "spec": SPEC, "shape": [2],
             "queue": "cpu", "created_at": now, "enqueued_at": now, "attempts": 0, "cancel_requested": False,
             "reserved_values": per_job} for _ in range(10_000)])
    with db.session() as s:
        check_quotas(s, "alice", Quotas(submissions_per_minute=2), jobs=1, values=per_job)
        with pytest.raises(QuotaExceeded, match="DESCENT_QUOTA_SUBMISSIONS_PER_MINUTE"):
            check_quotas(s, "alice", Quotas(submissions_per_minute=1), jobs=1, values=per_job)
        with pytest.raises(QuotaExceeded, match="DESCENT_QUOTA_ACTIVE_JOBS"):
            check_quotas(s, "alice", Quotas(active_jobs=10_000), jobs=1, values=per_job)


def test_a_finished_job_keeps_only_what_it_stored(db):
    job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=12 * PER_ROW)
    assert reserved(db, job.id) == 12 * PER_ROW
    job_store.claim_job(db, job.id, "w1", 30, 3)
    rows = HistoryRows(steps=[0, 1, 2], f=[3.0, 2.0, 1.0], grad_norm=[1.0, 1.0, 1.0], lr=[0.1] * 3,
                        x=[[1.0, 2.0]] * 3)
    job_store.finish_job(db, job.id, "w1", JobStatus.SUCCEEDED, {"f": 1.0}, None, [rows])
    assert reserved(db, job.id) == 3 * PER_ROW


def test_a_cancelled_queued_job_gives_its_reservation_back(db):
    job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=12 * PER_ROW)
    job_store.request_cancel(db, job.id)
    assert reserved(db, job.id) == 0


def test_deleting_a_job_does_not_make_room_under_the_per_minute_quota(db):
    from datetime import timedelta

    from service.store import deletion
    from service.store.models import DeletedSubmission
    from service.store.quotas import WINDOW

    quotas = Quotas(submissions_per_minute=2)
    first, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", quotas=quotas)
    second, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", quotas=quotas)
    deletion.delete_job(db, first.id, owner="alice")
    deletion.delete_job(db, second.id, owner="alice")
    with pytest.raises(QuotaExceeded, match="2 submissions in the last minute"):
        job_store.create_job(db, SPEC, [2], "cpu", owner="alice", quotas=quotas)
    job_store.create_job(db, SPEC, [2], "cpu", owner="bob", quotas=quotas)  # another owner's count is his own
    with db.session() as s:  # once the window has passed, the deleted submissions no longer count
        for row in s.scalars(select(DeletedSubmission)):
            row.created_at = row.created_at - WINDOW - timedelta(seconds=1)
    job_store.create_job(db, SPEC, [2], "cpu", owner="alice", quotas=quotas)
    third, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", quotas=quotas)
    deletion.delete_job(db, third.id)  # writing a row drops those that have left the window
    with db.session() as s:
        assert [row.owner for row in s.scalars(select(DeletedSubmission))] == ["alice"]
