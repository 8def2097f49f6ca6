"""Data tensors in the store, on each backend: kept once per distinct tensor, out of the jobs'
specs; put back for the worker that claims a job; gone with the last job that reads them."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select

from service.store import data
from service.store import jobs as job_store
from service.store import sweeps as sweep_store
from service.store.batches import claim_batch
from service.store.db import Conflict
from service.store.models import DataTensor, Job, JobData

A = [[1.0, 2.0], [3.0, 4.5], [5.0, -6.0]]
B = [1.0, 0.0, -1.0]
SPEC = {"objective": "((A @ x - b) ** 2).sum()", "x0": [0.0, 0.0], "data": {"A": A, "b": B}, "steps": 5}


def count(db, table) -> int:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_a_jobs_data_is_stored_apart_and_its_spec_holds_references(db):
    job, _ = job_store.create_job(db, SPEC, [2], "cpu")
    stored = job_store.get_job(db, job.id).spec["data"]
    assert set(stored) == {"A", "b"} and all(data.is_reference(entry) for entry in stored.values())
    assert stored["A"]["shape"] == [3, 2] and stored["b"]["shape"] == [3]
    assert count(db, DataTensor) == 2 and count(db, JobData) == 2
    [full] = data.with_values(db, [job_store.get_job(db, job.id)])
    assert full.spec["data"] == {"A": A, "b": B}


def test_the_same_tensor_is_stored_once_for_every_job_and_a_sweep_shares_it(db):
    job_store.create_job(db, SPEC, [2], "cpu")
    job_store.create_job(db, {**SPEC, "x0": [1.0, 1.0]}, [2], "cpu")
    jobs = [({**SPEC, "x0": [float(i), 1.0]}, [2], "cpu", 60, None) for i in range(200)]
    sweep, ids = sweep_store.create_sweep(db, owner="local", name="s", tags={}, base=SPEC, grid=[["steps", [5]]],
                                          starts={"list": 200}, n_starts=200, tolerance=1e-3, jobs=iter(jobs),
                                          count=200, values=60 * 200)
    assert count(db, DataTensor) == 2 and count(db, JobData) == 2 * 202
    assert data.is_reference(sweep_store.get_sweep(db, sweep.id).base["data"]["A"])


def test_a_claimed_job_comes_with_its_datas_values(db):
    job, _ = job_store.create_job(db, SPEC, [2], "cpu")
    [claimed] = claim_batch(db, [job.id], "w1", 30, 3, limit=10, max_elements=1000)
    assert claimed.spec["data"] == {"A": A, "b": B}


def test_a_repeated_idempotency_key_compares_the_data(db):
    first, created = job_store.create_job(db, SPEC, [2], "cpu", "key-1")
    again, created_again = job_store.create_job(db, SPEC, [2], "cpu", "key-1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict):
        job_store.create_job(db, {**SPEC, "data": {"A": A, "b": [1.0, 0.0, 1.0]}}, [2], "cpu", "key-1")


def test_a_tensor_goes_with_the_last_job_that_reads_it(db):
    one, _ = job_store.create_job(db, SPEC, [2], "cpu")
    two, _ = job_store.create_job(db, {**SPEC, "data": {"A": A, "b": [7.0, 7.0, 7.0]}}, [2], "cpu")
    with db.session() as s:
        s.execute(delete(Job).where(Job.id == one.id))
        assert data.forget_unread(s) == 1  # one's b; A is still read by two
    assert count(db, DataTensor) == 2 and count(db, JobData) == 2
    with db.session() as s:
        s.execute(delete(Job).where(Job.id == two.id))
        assert data.forget_unread(s) == 2
    assert count(db, DataTensor) == 0


def test_each_owner_has_its_own_copy_and_a_delete_counts_only_its_own(db):
    """No answer depends on another owner's data: bob's delete reports the same whether or not
    alice stores the same tensors, and alice's job still reads its data after it."""
    from service.store.deletion import delete_job

    def bobs_delete() -> int:
        job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="bob")
        return delete_job(db, job.id, owner="bob").data_tensors

    alone = bobs_delete()
    assert alone == 2 and count(db, DataTensor) == 0
    alices, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice")
    bobs, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="bob")
    assert count(db, DataTensor) == 4  # the same two tensors, once per owner
    with db.session() as s:
        assert sorted(s.execute(select(DataTensor.owner, func.count()).group_by(DataTensor.owner)).all()) == [
            ("alice", 2), ("bob", 2)]
        assert {(r.job_id, r.owner) for r in s.scalars(select(JobData))} == {(alices.id, "alice"), (bobs.id, "bob")}
    assert delete_job(db, bobs.id, owner="bob").data_tensors == alone
    assert bobs_delete() == alone
    [full] = data.with_values(db, [job_store.get_job(db, alices.id)])
    assert full.spec["data"] == {"A": A, "b": B}
    [claimed] = claim_batch(db, [alices.id], "w1", 30, 3, limit=10, max_elements=1000)
    assert claimed.spec["data"] == {"A": A, "b": B}
    # a reference only another owner's copy answers reads nothing
    refs = job_store.get_job(db, alices.id).spec["data"]
    assert data.data_with_values(db, refs, owner="bob") is None
    assert data.data_with_values(db, refs, owner="alice") == {"A": A, "b": B}


def test_a_delete_forgets_only_its_owners_unread_tensors(db):
    """A tensor of alice's no job reads (none is expected) is not bob's delete's business, nor in
    his count; the retention clean-up's sweep of everyone's takes it."""
    from service.store.deletion import apply_retention, delete_job

    alices, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice")
    with db.session() as s:  # alice's links gone, her tensors left unread (as by a crash, or a migration)
        s.execute(delete(JobData).where(JobData.job_id == alices.id))
    bobs, _ = job_store.create_job(db, {**SPEC, "data": {"A": A, "b": [9.0, 9.0, 9.0]}}, [2], "cpu", owner="bob")
    assert delete_job(db, bobs.id, owner="bob").data_tensors == 2
    assert count(db, DataTensor) == 2  # alice's, untouched
    assert apply_retention(db, None, 10**9).removed.data_tensors == 2
    assert count(db, DataTensor) == 0


def test_a_sweep_of_many_jobs_stores_its_owners_copy_once(db):
    jobs = [({**SPEC, "x0": [float(i), 1.0]}, [2], "cpu", 60, None) for i in range(30)]
    for owner in ("alice", "bob"):
        sweep_store.create_sweep(db, owner=owner, name="s", tags={}, base=SPEC, grid=[["steps", [5]]],
                                 starts={"list": 30}, n_starts=30, tolerance=1e-3, jobs=iter(jobs), count=30,
                                 values=60 * 30)
    assert count(db, DataTensor) == 4 and count(db, JobData) == 2 * 60
