"""Sweeps in the store, on each backend: jobs stored in bulk in one transaction, the summary's sort
by final f (non-finite values included), steps_to_tolerance in SQL, cancel, the grid of final f
computed in SQL over every job, and the listing of sweeps with their counts."""
from __future__ import annotations

import math
import statistics

import pytest
from sqlalchemy import bindparam, select, update

from service.config import Quotas
from service.store import HistoryRows
from service.store import jobs as job_store
from service.store import sweeps as sweep_store
from service.store.history import save_chunk
from service.store.models import Job
from service.store.quotas import QuotaExceeded
from service.status import JobStatus

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
        batch = HistoryRows(steps=list(range(0, 10, 2)), f=fs, grad_norm=[1.0] * 5, lr=[0.1] * 5,
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


def grid_sweep(db, grid: list, n_starts: int, owner: str = "alice"):  # type: ignore[no-untyped-def]
    n = n_starts * math.prod(len(values) for _, values in grid)
    jobs = [(SPEC, [2], "cpu", 60, None) for _ in range(n)]
    return sweep_store.create_sweep(db, owner=owner, name="g", tags={}, base=SPEC, grid=grid, starts={"list": n_starts},
                                    n_starts=n_starts, tolerance=1e-3, jobs=iter(jobs), count=n, values=60 * n)


def end_all(db, ids: list, results: list) -> None:  # type: ignore[no-untyped-def]
    """Each job's status and result at once: (status, result) per job, in sweep order."""
    with db.session() as s:
        jobs = Job.__table__
        s.execute(update(jobs).where(jobs.c.id == bindparam("job")).values(status=bindparam("st"), result=bindparam("res")),
                  [{"job": job_id, "st": st, "res": res} for (job_id, _, _), (st, res) in zip(ids, results)])


def test_the_grid_is_computed_in_sql_over_every_job_of_the_sweep(db):
    grid = [["optimizer.name", ["sgd", "adam", "rmsprop"]], ["optimizer.lr", [0.1, 0.01]]]
    sweep, ids = grid_sweep(db, grid, n_starts=5)  # 30 jobs
    results = []
    for index in range(30):
        f = (index * 7919) % 97 / 8.0  # distinct, unordered values
        if index % 10 == 3:
            results.append((JobStatus.SUCCEEDED, {"f": "Infinity", "stop_reason": "diverged"}))
        elif index % 10 == 7:
            results.append((JobStatus.QUEUED, None))
        elif index == 11:
            results.append((JobStatus.FAILED, None))
        elif index == 12:
            results.append((JobStatus.SUCCEEDED, {"f": "NaN", "stop_reason": "steps"}))
        else:
            results.append((JobStatus.SUCCEEDED, {"f": f, "stop_reason": "steps"}))
    end_all(db, ids, results)
    from service.spec.sweep import grid_values

    for rows, cols in (("optimizer.name", "optimizer.lr"), ("optimizer.lr", "optimizer.name"), ("optimizer.name", None),
                       (None, None)):
        want: dict = {}
        for index, (status, result) in enumerate(results):
            values, _ = grid_values(grid, 5, index)
            cell = want.setdefault((values.get(rows), values.get(cols)), {"n": 0, "bad": 0, "f": []})
            cell["n"] += 1
            f = (result or {}).get("f")
            if status == JobStatus.SUCCEEDED and (isinstance(f, str) or result["stop_reason"] == "diverged"):
                cell["bad"] += 1
            elif status == JobStatus.SUCCEEDED:
                cell["f"].append(f)
        for stat, of in (("min", min), ("median", statistics.median), ("mean", statistics.fmean)):
            got = sweep_store.grid(db, sweep, rows, cols, stat)
            assert got["rows"] == (dict(grid)[rows] if rows else [None])
            assert got["cols"] == (dict(grid)[cols] if cols else [None])
            for i, r in enumerate(got["rows"]):
                for j, c in enumerate(got["cols"]):
                    cell = want[(r, c)]
                    assert got["counts"][i][j] == cell["n"] and got["diverged"][i][j] == cell["bad"]
                    assert got["finite"][i][j] == len(cell["f"])
                    assert got["cells"][i][j] == pytest.approx(of(cell["f"]), rel=1e-12), (stat, r, c)
            assert sum(map(sum, got["counts"])) == 30


def test_a_four_thousand_job_grid_has_every_cell_and_every_job(db):
    grid = [["optimizer.name", ["sgd", "adam"]], ["optimizer.lr", [0.1, 0.01]]]
    sweep, ids = grid_sweep(db, grid, n_starts=1000)
    end_all(db, ids, [(JobStatus.SUCCEEDED, {"f": 1.0 + index, "stop_reason": "steps"}) for index in range(4000)])
    got = sweep_store.grid(db, sweep, "optimizer.name", "optimizer.lr", "median")
    assert got["counts"] == [[1000, 1000], [1000, 1000]]
    # Cell (i, j) holds the jobs 1000 * (2i + j) to 1000 * (2i + j) + 999: f 1 to 1000 more.
    assert got["cells"] == [[500.5, 1500.5], [2500.5, 3500.5]]
    assert got["diverged"] == [[0, 0], [0, 0]]


def test_sweeps_are_listed_newest_first_by_owner_with_their_counts(db):
    made = [make(db, 3, owner="alice" if k != 2 else "bob") for k in range(5)]
    end_all(db, made[0][1], [(JobStatus.SUCCEEDED, {"f": "Infinity", "stop_reason": "diverged"}),
                             (JobStatus.SUCCEEDED, {"f": 1.0, "stop_reason": "steps"}), (JobStatus.QUEUED, None)])
    alices = [sweep.id for k, (sweep, _) in enumerate(made) if k != 2][::-1]
    first, cursor = sweep_store.list_sweeps(db, 3, None, owner="alice")
    second, end = sweep_store.list_sweeps(db, 3, cursor, owner="alice")
    assert [s.id for s in first + second] == alices and end is None
    everyone, _ = sweep_store.list_sweeps(db, 10, None)
    assert len(everyone) == 5 and everyone[0].created_at >= everyone[-1].created_at
    counts = sweep_store.counts_of(db, [made[0][0].id, made[1][0].id])
    assert counts[made[0][0].id] == ({"queued": 1, "running": 0, "succeeded": 2, "failed": 0, "cancelled": 0}, 1)
    assert counts[made[1][0].id][0]["queued"] == 3 and counts[made[1][0].id][1] == 0
    for bad in ("bm90IGEgY3Vyc29y", "c3dlZXBzOm5vdC1hLXRpbWV8eA=="):
        with pytest.raises(ValueError):
            sweep_store.list_sweeps(db, 3, bad)
