"""Deleting jobs and sweeps in the store, on each backend: everything of a job goes (history,
tags, checkpoint, data links and the tensors no other job reads), another owner's job is NotFound
as an unknown one is, a second delete changes nothing, the quota is free at once, long histories
go in batches, a running job's worker is fenced out (with the real runner racing the delete), and
the retention clean-up (with its dry run and its one-at-a-time lock)."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, func, select, text, update

from service.config import Quotas
from service.store import HistoryRows, LeaseLost, NotFound
from service.store import data, deletion
from service.store import jobs as job_store
from service.store import sweeps as sweep_store
from service.store.db import utcnow
from service.store.history import save_chunk
from service.store.models import DataTensor, history_rows, Job, JobData, JobTag, Sweep
from service.store.quotas import QuotaExceeded, check_quotas
from service.status import JobStatus
from testkit.backends import embedded_settings
from tests.helpers.threads import at_once

SPEC = {"objective": "x.sum()", "x0": [1.0, 2.0], "steps": 10, "record": {"every": 1, "x": True, "grad": False},
        "tags": {"team": "a"}}
PER_ROW = 3 + 2
A = [[1.0, 2.0], [3.0, 4.0]]


def rows(first: int, n: int) -> HistoryRows:
    steps = np.arange(first, first + n)
    return HistoryRows(steps=steps, f=steps * 0.5, grad_norm=np.ones(n), lr=np.full(n, 0.1),
                        x=np.stack([steps, steps], axis=1).astype(float))


def finished_job(db: Any, n_rows: int = 3, owner: str = "alice", spec: dict[str, Any] | None = None,
                 status: JobStatus = JobStatus.SUCCEEDED, chunk: int = 50_000) -> str:
    """A job that ran as a worker runs one: claimed, its rows (and a checkpoint) saved, finished."""
    job, _ = job_store.create_job(db, spec or SPEC, [2], "cpu", owner=owner, reserved_values=(n_rows + 1) * PER_ROW)
    assert job_store.claim_job(db, job.id, "w1", 60, 3) is not None
    for first in range(0, n_rows - 1, chunk):
        save_chunk(db, job.id, "w1", rows(first, min(chunk, n_rows - 1 - first)), b"ckpt", first, 60)
    job_store.finish_job(db, job.id, "w1", status, {"f": 0.0}, None, [rows(n_rows - 1, 1)])
    return job.id


def count(db: Any, model: Any, *where: Any) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def everything_of(db: Any, job_id: str) -> tuple[int, int, int, int]:
    return (count(db, Job, Job.id == job_id), count(db, history_rows, history_rows.c.job_id == job_id),
            count(db, JobTag, JobTag.job_id == job_id), count(db, JobData, JobData.job_id == job_id))


# --- delete ---------------------------------------------------------------------------------------

def test_a_delete_removes_the_job_its_history_tags_checkpoint_and_data(db):
    job_id = finished_job(db, 25, spec={**SPEC, "data": {"A": A}})
    other = finished_job(db, 4)
    assert everything_of(db, job_id) == (1, 25, 1, 1) and count(db, DataTensor) == 1
    removed = deletion.delete_job(db, job_id, owner="alice")
    assert removed == deletion.Removed(jobs=1, history_rows=25, data_tensors=1, sweeps=0)
    assert everything_of(db, job_id) == (0, 0, 0, 0) and count(db, DataTensor) == 0
    assert everything_of(db, other) == (1, 4, 1, 0)  # another job keeps all it has


def test_a_second_delete_is_not_found_and_changes_nothing(db):
    job_id, kept = finished_job(db), finished_job(db)
    deletion.delete_job(db, job_id)
    with pytest.raises(NotFound) as again:
        deletion.delete_job(db, job_id)
    with pytest.raises(NotFound) as unknown:
        deletion.delete_job(db, "00000000-0000-4000-8000-000000000000")
    assert str(again.value).replace(job_id, "ID") == str(unknown.value).replace("00000000-0000-4000-8000-000000000000", "ID")
    assert everything_of(db, kept) == (1, 3, 1, 0)


def test_another_owners_job_is_not_found_exactly_as_an_unknown_one(db):
    job_id = finished_job(db, owner="alice")
    with pytest.raises(NotFound, match="no job with id"):
        deletion.delete_job(db, job_id, owner="bob")
    assert everything_of(db, job_id) == (1, 3, 1, 0)
    assert deletion.delete_job(db, job_id, owner=None).jobs == 1  # an admin's delete (no owner filter)


def test_a_delete_frees_the_owners_quota_at_once(db):
    quotas = Quotas(active_jobs=1, recorded_values=100)
    queued, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=100, quotas=quotas)
    with db.session() as s, pytest.raises(QuotaExceeded):
        check_quotas(s, "alice", quotas, jobs=1, values=1)
    deletion.delete_job(db, queued.id, owner="alice")
    job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=100, quotas=quotas)  # no 429
    done = finished_job(db, 10, owner="bob")  # a finished job holds what its history holds
    with db.session() as s:
        assert s.get(Job, done).reserved_values == 10 * PER_ROW
    with db.session() as s, pytest.raises(QuotaExceeded):
        check_quotas(s, "bob", Quotas(recorded_values=10 * PER_ROW), jobs=1, values=1)
    deletion.delete_job(db, done, owner="bob")
    with db.session() as s:
        check_quotas(s, "bob", Quotas(recorded_values=10 * PER_ROW), jobs=1, values=10 * PER_ROW)


def test_a_long_history_goes_in_batches_of_short_transactions(db):
    job_id = finished_job(db, 12_345)
    deletes: list[str] = []

    def seen(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE FROM HISTORY"):
            deletes.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        removed = deletion.delete_job(db, job_id, batch_rows=1_000)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert removed.history_rows == 12_345 and count(db, history_rows) == 0
    assert len(deletes) >= 13  # 13 ranges of at most 1,000 rows, and the final guard


def test_many_small_histories_go_together(db):
    ids = [finished_job(db, 7) for _ in range(20)]
    assert deletion.remove_jobs(db, ids, batch_rows=50).history_rows == 140
    assert count(db, history_rows) == 0 and count(db, Job) == 0


def test_a_queued_job_is_cancelled_then_deleted_and_never_runs(db):
    job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=55)
    deletion.delete_job(db, job.id)
    assert job_store.claim_job(db, job.id, "w1", 60, 3) is None
    assert everything_of(db, job.id) == (0, 0, 0, 0)


def test_a_running_jobs_worker_is_fenced_out(db):
    job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=55)
    job_store.claim_job(db, job.id, "w1", 60, 3)
    save_chunk(db, job.id, "w1", rows(0, 5), b"ckpt", 4, 60)
    assert deletion.delete_job(db, job.id).history_rows == 5
    with pytest.raises(LeaseLost):
        save_chunk(db, job.id, "w1", rows(5, 5), b"ckpt", 9, 60)
    with pytest.raises(LeaseLost):
        job_store.finish_job(db, job.id, "w1", JobStatus.SUCCEEDED, {"f": 0.0}, None, [rows(10, 1)])
    assert count(db, history_rows, history_rows.c.job_id == job.id) == 0


def test_a_fenced_job_no_longer_writes_even_before_its_rows_are_gone(db):
    """The fence alone (step 1 of a delete) stops every write: the history is frozen before the
    purge starts, so no batch can miss a row written behind it."""
    job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=55)
    job_store.claim_job(db, job.id, "w1", 60, 3)
    with db.session() as s:
        assert deletion._fence(s, db.dialect, Job.__table__.c.id == job.id) == 1
    with pytest.raises(LeaseLost):
        save_chunk(db, job.id, "w1", rows(0, 5), None, None, 60)
    assert job_store.renew_jobs(db, [job.id], "w1", 60) == {}
    with db.session() as s:
        assert s.get(Job, job.id).status == JobStatus.CANCELLED and s.get(Job, job.id).reserved_values == 0


# --- sweeps and shared data -----------------------------------------------------------------------

def sweep_with_data(db: Any, n: int = 4, owner: str = "alice") -> tuple[Any, list[str]]:
    spec = {**SPEC, "data": {"A": A}}
    jobs = [({**spec, "x0": [float(i), 1.0]}, [2], "cpu", 60, None) for i in range(n)]
    sweep, ids = sweep_store.create_sweep(db, owner=owner, name="s", tags={}, base=spec, grid=[["steps", [10]]],
                                          starts={"list": n}, n_starts=n, tolerance=1e-3, jobs=iter(jobs), count=n,
                                          values=60 * n)
    return sweep, [job_id for job_id, _, _ in ids]


def test_deleting_one_job_of_a_sweep_keeps_the_data_its_siblings_share(db):
    sweep, ids = sweep_with_data(db)
    assert count(db, DataTensor) == 1 and count(db, JobData) == 4
    removed = deletion.delete_job(db, ids[0])
    assert removed.data_tensors == 0 and count(db, DataTensor) == 1 and count(db, JobData) == 3
    [sibling] = data.with_values(db, [job_store.get_job(db, ids[1])])
    assert sibling.spec["data"]["A"] == A  # a sibling still reads it, as a worker would
    assert sweep_store.get_sweep(db, sweep.id).id == sweep.id  # the sweep stays, with its other jobs


def test_a_sweep_delete_removes_every_job_and_the_sweep(db):
    sweep, ids = sweep_with_data(db, 6)
    job_store.claim_job(db, ids[0], "w1", 60, 3)
    save_chunk(db, ids[0], "w1", rows(0, 3), None, None, 60)
    outside = finished_job(db, 2, spec={**SPEC, "data": {"A": A}})  # not of the sweep, reads the same A
    with pytest.raises(NotFound):
        deletion.delete_sweep(db, sweep.id, owner="bob")
    removed = deletion.delete_sweep(db, sweep.id, owner="alice")
    assert removed == deletion.Removed(jobs=6, history_rows=3, data_tensors=0, sweeps=1)
    assert count(db, Job, Job.sweep_id == sweep.id) == 0 and count(db, Sweep) == 0
    assert count(db, DataTensor) == 1  # the outside job still reads it
    with pytest.raises(LeaseLost):
        save_chunk(db, ids[0], "w1", rows(3, 3), None, None, 60)
    with pytest.raises(NotFound):
        deletion.delete_sweep(db, sweep.id)
    deletion.delete_job(db, outside)
    assert count(db, DataTensor) == 0


# --- a delete racing a real worker ----------------------------------------------------------------

RACER = {"objective": "10 * (x ** 2).sum()", "x0": [8.0, 8.0], "steps": 1_000_000,
         "optimizer": {"name": "sgd", "lr": 1e-9}, "record": {"every": 1, "x": True, "grad": False},
         "stop": {"max_seconds": 120}}


@pytest.mark.slow
def test_a_delete_racing_a_worker_writing_chunks_leaves_no_row_and_stops_the_worker(db, tmp_path):
    from service.spec import check_spec
    from workers import runner
    from workers.state import WorkerState

    settings = replace(embedded_settings(tmp_path), database_url=db.url)
    checked = check_spec(RACER, settings.limits)
    job, _ = job_store.create_job(db, checked.as_json(), list(checked.shape), "cpu", owner="alice",
                                  reserved_values=checked.recorded_values)
    state = WorkerState(settings=settings, db=db, worker_id="racer:1", hostname="racer", queues=["cpu"], device="cpu")
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(runner.execute(state, job.id)), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while count(db, history_rows, history_rows.c.job_id == job.id) < 2_000:  # several chunks written
        assert time.monotonic() < deadline and worker.is_alive(), "the worker wrote no history"
        time.sleep(0.02)
    removed = deletion.delete_job(db, job.id, owner="alice", batch_rows=500)
    assert removed.jobs == 1 and removed.history_rows >= 2_000
    worker.join(30)
    assert not worker.is_alive() and outcome == ["lease_lost"]  # it has stopped: nothing of it writes now
    assert everything_of(db, job.id) == (0, 0, 0, 0)
    assert count(db, history_rows) == 0


# --- retention ------------------------------------------------------------------------------------

def age(db: Any, job_id: str, seconds: float) -> None:
    """Make a finished job look as if it finished ``seconds`` ago."""
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(seconds=seconds)))


def test_retention_deletes_old_finished_jobs_and_drops_old_histories(db):
    old = finished_job(db, 30, status=JobStatus.FAILED)
    oldish = finished_job(db, 20)
    new = finished_job(db, 10)
    queued, _ = job_store.create_job(db, SPEC, [2], "cpu", reserved_values=55)
    age(db, old, 10 * 86_400)
    age(db, oldish, 2 * 86_400)
    plan = deletion.apply_retention(db, history_seconds=86_400, job_seconds=7 * 86_400, dry_run=True)
    assert [j.id for j in plan.deleted] == [old] and [j.id for j in plan.pruned] == [oldish]
    assert (plan.deleted[0].rows, plan.pruned[0].rows, plan.removed.history_rows) == (30, 20, 50)
    assert count(db, history_rows) == 60 and count(db, Job) == 4  # a dry run changes nothing
    done = deletion.apply_retention(db, history_seconds=86_400, job_seconds=7 * 86_400)
    assert (done.removed.jobs, done.removed.history_rows) == (1, 50)
    assert everything_of(db, old) == (0, 0, 0, 0)
    assert everything_of(db, oldish)[:2] == (1, 0)  # the job stays, its history went
    with db.session() as s:
        assert s.get(Job, oldish).reserved_values == 0  # and with it what it held of the quota
    dropped = job_store.get_job(db, oldish).history_dropped_at
    assert dropped is not None and abs((dropped - utcnow()).total_seconds()) < 60  # the job says so
    assert job_store.get_job(db, new).history_dropped_at is None
    assert everything_of(db, new)[:2] == (1, 10) and everything_of(db, queued.id)[0] == 1
    again = deletion.apply_retention(db, history_seconds=86_400, job_seconds=7 * 86_400)
    assert again.removed == deletion.Removed() and not again.pruned  # nothing twice


def test_retention_drops_the_history_of_a_job_that_reserved_nothing(db):
    """Jobs made before quotas (revision 0003) reserve nothing: found by their rows instead."""
    early = finished_job(db, 12)
    empty = job_store.create_job(db, SPEC, [2], "cpu")[0].id
    assert job_store.request_cancel(db, empty).status == JobStatus.CANCELLED  # never ran: no history
    with db.session() as s:
        s.get(Job, early).reserved_values = 0
        s.get(Job, empty).reserved_values = 0
    age(db, early, 2 * 86_400)
    age(db, empty, 2 * 86_400)
    done = deletion.apply_retention(db, history_seconds=86_400, job_seconds=None)
    assert [j.id for j in done.pruned] == [early] and done.removed.history_rows == 12
    assert job_store.get_job(db, early).history_dropped_at is not None
    assert job_store.get_job(db, empty).history_dropped_at is None  # it had none to drop


def test_retention_deletes_the_sweeps_it_empties_and_keeps_shared_data_while_read(db):
    sweep, ids = sweep_with_data(db, 3)
    with db.session() as s:
        s.execute(update(Job).where(Job.sweep_id == sweep.id).values(status=JobStatus.CANCELLED))
        s.execute(update(Sweep).where(Sweep.id == sweep.id).values(created_at=utcnow() - timedelta(days=3)))
    for job_id in ids[:2]:
        age(db, job_id, 2 * 86_400)
    age(db, ids[2], 60)
    done = deletion.apply_retention(db, history_seconds=None, job_seconds=86_400)
    assert (done.removed.jobs, done.removed.sweeps, count(db, DataTensor)) == (2, 0, 1)  # one job still reads A
    age(db, ids[2], 2 * 86_400)
    assert deletion.apply_retention(db, None, 86_400, dry_run=True).removed.sweeps == 1
    done = deletion.apply_retention(db, None, 86_400)
    assert (done.removed.jobs, done.removed.sweeps, done.removed.data_tensors) == (1, 1, 1)
    assert count(db, Sweep) == 0 and count(db, DataTensor) == 0


def test_one_clean_up_at_a_time(db):
    with deletion.exclusive(db) as first:
        with deletion.exclusive(db) as second:
            assert first and not second
    with deletion.exclusive(db) as again:
        assert again


def waiting_on_a_lock(db: Any) -> bool:
    """Whether a session of ``db``'s PostgreSQL database waits on a lock now."""
    with db.engine.connect() as conn:
        return bool(conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'")))


def test_on_postgresql_a_delete_waits_for_a_chunk_in_flight_then_removes_its_rows_too(pg_db):
    """READ COMMITTED: the fence's UPDATE waits for the chunk transaction that holds the job's
    row; once that commits, the job is fenced and the purge (which starts after) takes its rows."""
    from service.store.chunks import write_rows

    db = pg_db
    job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice", reserved_values=55)
    job_store.claim_job(db, job.id, "w1", 60, 3)
    save_chunk(db, job.id, "w1", rows(0, 5), None, None, 60)
    removed: list[Any] = []
    deleter = threading.Thread(target=lambda: removed.append(deletion.delete_job(db, job.id)), daemon=True)
    with db.session() as s:  # a worker's chunk transaction, held open
        assert job_store.renew_jobs(db, [job.id], "w1", 60, session=s) == {job.id: False}
        write_rows(s, job.id, rows(5, 5))
        deleter.start()
        deadline = time.monotonic() + 30
        while not waiting_on_a_lock(db):
            assert time.monotonic() < deadline and deleter.is_alive(), "the delete never waited on the row lock"
            time.sleep(0.02)
        assert deleter.is_alive() and not removed  # the fence waits for this transaction's row lock
    deleter.join(30)
    assert removed[0].history_rows == 10 and count(db, history_rows) == 0
    with pytest.raises(LeaseLost):
        save_chunk(db, job.id, "w1", rows(10, 5), None, None, 60)
    assert count(db, history_rows) == 0 and count(db, Job) == 0


@pytest.mark.slow
def test_deleting_one_job_of_a_running_batch_drops_that_lane_and_the_others_go_on(db, tmp_path):
    """A sweep's jobs run as one batch: the deleted job's lane stops at the next chunk boundary
    with no row written, its siblings keep running (and end when cancelled)."""
    from service.spec import check_spec
    from service.spec.batchkey import batch_key
    from workers import runner
    from workers.state import WorkerState

    settings = replace(embedded_settings(tmp_path), database_url=db.url)
    ids = []
    for i in range(3):
        checked = check_spec({**RACER, "x0": [8.0 + i, 8.0]}, settings.limits)
        job, _ = job_store.create_job(db, checked.as_json(), list(checked.shape), "cpu", owner="alice",
                                      reserved_values=checked.recorded_values, batch_key=batch_key(checked))
        ids.append(job.id)
    state = WorkerState(settings=settings, db=db, worker_id="batch:1", hostname="batch", queues=["cpu"], device="cpu")
    outcomes: list[Any] = []
    worker = threading.Thread(target=lambda: outcomes.append(runner.execute_message(state, ids)), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while count(db, history_rows, history_rows.c.job_id == ids[1]) < 1_000:
        assert time.monotonic() < deadline and worker.is_alive(), "the batch wrote no history"
        time.sleep(0.02)
    deletion.delete_job(db, ids[1])
    # three chunk boundaries later (the others' rows grew three times), the deleted lane wrote nothing
    seen, chunks, deadline = count(db, history_rows, history_rows.c.job_id == ids[0]), 0, time.monotonic() + 60
    while chunks < 3:
        assert time.monotonic() < deadline and worker.is_alive(), "the batch's other lanes stopped writing"
        now = count(db, history_rows, history_rows.c.job_id == ids[0])
        chunks, seen = chunks + (now > seen), now
        time.sleep(0.02)
    assert count(db, history_rows, history_rows.c.job_id == ids[1]) == 0
    assert worker.is_alive()
    for job_id in (ids[0], ids[2]):
        job_store.request_cancel(db, job_id)
    worker.join(30)
    assert not worker.is_alive()
    assert outcomes[0] == {ids[0]: JobStatus.CANCELLED, ids[1]: "lease_lost", ids[2]: JobStatus.CANCELLED}
    assert everything_of(db, ids[1]) == (0, 0, 0, 0)


def test_two_deletes_of_one_job_at_once_remove_it_once_and_the_other_is_not_found(db):
    job_id = finished_job(db, 3_000)
    answers = at_once(lambda: deletion.delete_job(db, job_id, batch_rows=200), 2, NotFound, timeout=60)
    # one removed it, the other found it gone (at once, or when it came to remove the row)
    not_found = [a for a in answers if isinstance(a, NotFound)]
    assert [a.jobs for a in answers if not isinstance(a, NotFound)] == [1] and len(not_found) == 1
    assert everything_of(db, job_id) == (0, 0, 0, 0)  # both purged rows; none is left
