"""Sweeps in the store, on each backend: jobs stored in bulk in one transaction, the summary's sort
by final f (non-finite values included), steps_to_tolerance in SQL, and cancel."""
from __future__ import annotations

import math

import pytest
from sqlalchemy import select, update

from service.config import Quotas
from service.store import HistoryBatch
from service.store import jobs as job_store
from service.store import sweeps as sweep_store
from service.store.history import save_chunk
from service.store.models import Job
from service.store.quotas import QuotaExceeded
from service.store.status import JobStatus

SPEC = {"objective": {"name": "parabola", "params": {}}, "x0": [1.0, 2.0], "steps": 10,
        "record": {"every": 1, "x": True, "grad": False}}


def make(db, n: int = 6, owner: str = "alice", quotas: Quotas | None = None, tolerance: float = 1e-3):  # type: ignore[no-untyped-def]
    jobs = [({**SPEC, "x0": [float(i), 1.0]}, [2], "cpu", 60, None) for i in range(n)]
    return sweep_store.create_sweep(db, owner=owner, name="s", tags={}, base=SPEC, grid=[["steps", [10]]],
                                    starts={"list": n}, n_starts=n, tolerance=tolerance, jobs=iter(jobs), count=n,
                                    values=60 * n, quotas=quotas)


def finish(db, job_id: str, result: dict | None, status: str = JobStatus.SUCCEEDED) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=status, result=result))


def test_a_sweeps_jobs_are_stored_in_one_transaction_in_order(db):
    sweep, ids = make(db, 50)
    assert sweep.jobs == 50 and len(ids) == 50 and all(q == "cpu" for _, q, _ in ids)
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.sweep_index, Job.created_at, Job.owner, Job.spec, Job.status)
                         .where(Job.sweep_id == sweep.id).order_by(Job.sweep_index)).all()
    assert [r.id for r in rows] == [i for i, _, _ in ids] and [r.sweep_index for r in rows] == list(range(50))
    assert len({r.created_at for r in rows}) == 1 and {r.owner for r in rows} == {"alice"}
    assert [r.spec["x0"][0] for r in rows] == [float(i) for i in range(50)]
    assert sweep_store.counts(db, sweep.id)["queued"] == 50
    assert sweep_store.get_sweep(db, sweep.id, owner="alice").grid == [["steps", [10]]]
    with pytest.raises(Exception):
        sweep_store.get_sweep(db, sweep.id, owner="bob")


def test_a_quota_refusal_stores_nothing(db):
    with pytest.raises(QuotaExceeded):
        make(db, 6, quotas=Quotas(active_jobs=5))
    with db.session() as s:
        assert s.scalars(select(Job.id)).all() == []
    make(db, 5, quotas=Quotas(active_jobs=5))


def test_summary_sorts_by_final_f_with_non_finite_values_and_unfinished_last(db):
    sweep, ids = make(db, 7)
    values = ["NaN", 2.5, "-Infinity", None, 0.125, "Infinity", 1e-300]  # None: still queued
    for (job_id, _, _), f in zip(ids, values):
        if f is not None:
            finish(db, job_id, {"f": f, "stop_reason": "steps", "distance_to_minimum": 0.5})
    items, cursor = sweep_store.summary(db, sweep, 100, None, "f", lambda spec, n: None)
    order = [item["f"] for item in items]
    assert order[:5] == [-math.inf, 1e-300, 0.125, 2.5, math.inf]
    assert math.isnan(order[5]) and order[6] is None and cursor is None
    first, cursor = sweep_store.summary(db, sweep, 3, None, "f", lambda spec, n: None)
    second, cursor2 = sweep_store.summary(db, sweep, 3, cursor, "f", lambda spec, n: None)
    third, end = sweep_store.summary(db, sweep, 3, cursor2, "f", lambda spec, n: None)
    assert [i["id"] for i in first + second + third] == [i["id"] for i in items] and end is None
    with pytest.raises(ValueError):
        sweep_store.summary(db, sweep, 3, cursor, "created", lambda spec, n: None)


def test_steps_to_tolerance_is_the_first_recorded_step_within_tolerance_of_the_minimum(db):
    sweep, ids = make(db, 3, tolerance=0.01)
    for (job_id, _, _), fs in zip(ids, ([5.0, 1.0, 0.009, 0.5, 0.001], [5.0, 4.0, 3.0, 2.0, 1.0])):
        job_store.claim_job(db, job_id, "w", 30, 3)
        batch = HistoryBatch(steps=list(range(0, 10, 2)), f=fs, grad_norm=[1.0] * 5, lr=[0.1] * 5,
                             x=[[0.0, 0.0]] * 5)
        save_chunk(db, job_id, "w", batch, b"ck", 10, 30)
    items, _ = sweep_store.summary(db, sweep, 10, None, "created", lambda spec, n: 0.0)
    assert [i["steps_to_tolerance"] for i in items] == [4, None, None]
    items, _ = sweep_store.summary(db, sweep, 10, None, "created", lambda spec, n: None)  # no known minimum
    assert [i["steps_to_tolerance"] for i in items] == [None, None, None]


def test_cancel_ends_queued_jobs_in_one_update_and_flags_running_ones(db):
    sweep, ids = make(db, 5)
    job_store.claim_job(db, ids[0][0], "w", 30, 3)
    finish(db, ids[1][0], {"f": 1.0}, JobStatus.FAILED)
    assert sweep_store.cancel_sweep(db, sweep.id) == 3
    with db.session() as s:
        rows = {r.id: r for r in s.execute(select(Job.id, Job.status, Job.cancel_requested, Job.reserved_values,
                                                  Job.finished_at).where(Job.sweep_id == sweep.id))}
    assert rows[ids[0][0]].status == JobStatus.RUNNING and rows[ids[0][0]].cancel_requested
    assert rows[ids[1][0]].status == JobStatus.FAILED and rows[ids[1][0]].reserved_values == 60
    for job_id, _, _ in ids[2:]:
        assert rows[job_id].status == JobStatus.CANCELLED and rows[job_id].cancel_requested
        assert rows[job_id].reserved_values == 0 and rows[job_id].finished_at is not None
    assert sweep_store.cancel_sweep(db, sweep.id) == 0
