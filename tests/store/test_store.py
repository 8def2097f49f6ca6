"""The store on SQLite and PostgreSQL: schema, faithful floats, fenced and idempotent writes."""
from __future__ import annotations

import math
import threading
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.store import Database, HistoryRows, LeaseLost
from service.store import fleet
from service.store import jobs as job_store
from service.store.history import count_rows, iter_history, save_chunk
from service.store.migrate import SchemaOutOfDate, check_schema
from service.store.models import Base
from service.status import JobStatus

SPEC = {"objective": "x.sum()", "x0": [1, 2], "steps": 10}


def stored_rows(db: Database, job_id: str, **kwargs) -> list[dict]:  # type: ignore[no-untyped-def]
    """The job's stored rows (as ``iter_history`` pages them), one dict per row."""
    return [row for batch in iter_history(db, job_id, **kwargs) for row in batch.as_dicts()]


def new_job(db: Database) -> str:
    job, _ = job_store.create_job(db, SPEC, [2], "cpu")
    return job.id


def test_models_and_migrations_agree(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    check_schema(db)


def test_service_refuses_a_database_behind_head(tmp_path):
    with pytest.raises(SchemaOutOfDate, match="descent db upgrade"):
        check_schema(Database(f"sqlite:///{tmp_path / 'empty.db'}"))


def test_nan_and_infinities_are_stored_faithfully(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    batch = HistoryRows(steps=[0, 1, 2], f=[1.5, math.inf, math.nan], grad_norm=[-math.inf, 0.0, math.nan],
                         lr=[0.1, 0.1, 0.1], x=[[1.0, 2.0], [math.inf, -math.inf], [math.nan, 1e-300]])
    save_chunk(db, job_id, "w1", batch, b"ck", 3, 30)
    rows = list(stored_rows(db, job_id))
    assert rows[1]["f"] == math.inf and rows[0]["grad_norm"] == -math.inf
    assert math.isnan(rows[2]["f"]) and math.isnan(rows[2]["grad_norm"])
    assert rows[1]["x"] == [math.inf, -math.inf] and math.isnan(rows[2]["x"][0]) and rows[2]["x"][1] == 1e-300


def test_claim_is_exclusive_under_concurrency(db):
    job_id = new_job(db)
    winners = []

    def claim(name: str) -> None:
        if job_store.claim_job(db, job_id, name, 30, 3) is not None:
            winners.append(name)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_writes_are_fenced_on_the_claiming_worker(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    batch = HistoryRows(steps=[0], f=[1.0], grad_norm=[1.0], lr=[0.1])
    with pytest.raises(LeaseLost):
        save_chunk(db, job_id, "intruder", batch, None, None, 30)
    with pytest.raises(LeaseLost):
        job_store.finish_job(db, job_id, "intruder", JobStatus.SUCCEEDED, {}, None)
    assert count_rows(db, job_id) == 0


def test_reclaim_after_expired_lease_truncates_past_the_checkpoint(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    save_chunk(db, job_id, "w1", HistoryRows(steps=[0, 1, 2], f=[3.0, 2.0, 1.0], grad_norm=[1, 1, 1], lr=[.1, .1, .1]),
               b"ck3", 3, lease_seconds=-1)  # written, then the worker "dies": its lease is already over
    # a second worker reclaims: rows before the checkpoint stay, nothing after it
    job = job_store.claim_job(db, job_id, "w2", 30, 3)
    assert job is not None and job.checkpoint == b"ck3" and job.checkpoint_step == 3 and job.attempts == 2
    assert [r["step"] for r in stored_rows(db, job_id)] == [0, 1, 2]
    with pytest.raises(LeaseLost):
        job_store.renew(db, job_id, "w1", 30)


def test_job_out_of_attempts_fails_with_a_reason(db):
    job_id = new_job(db)
    for i in range(2):
        assert job_store.claim_job(db, job_id, f"w{i}", -1, 2) is not None
    assert job_store.claim_job(db, job_id, "w9", 30, 2) is None
    job = job_store.get_job(db, job_id)
    assert job.status == JobStatus.FAILED and "gave up after 2 attempts" in job.error


def test_cancel_running_sets_flag_and_finished_is_conflict(db):
    from service.store import Conflict

    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    assert job_store.request_cancel(db, job_id).status == JobStatus.RUNNING
    assert job_store.renew(db, job_id, "w1", 30) is True
    job_store.finish_job(db, job_id, "w1", JobStatus.CANCELLED, {}, None)
    with pytest.raises(Conflict):
        job_store.request_cancel(db, job_id)


def test_history_pages_and_every(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    n = 2500
    save_chunk(db, job_id, "w1", HistoryRows(steps=list(range(n)), f=[float(i) for i in range(n)],
                                              grad_norm=[0.0] * n, lr=[0.1] * n, x=[[float(i), 0.0] for i in range(n)]),
               None, None, 30)
    assert [r["step"] for r in stored_rows(db, job_id, start=10, limit=5)] == [10, 11, 12, 13, 14]
    assert len(list(stored_rows(db, job_id, rows_per_page=300))) == n
    assert [r["step"] for r in stored_rows(db, job_id, every=1000)] == [0, 1000, 2000]
    assert "x" not in stored_rows(db, job_id, with_x=False)[0]


def test_array_batches_round_trip_exactly(db):
    import numpy as np

    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    rng = np.random.default_rng(0)
    x, grad = rng.standard_normal((40, 6)), rng.standard_normal((40, 6)) * 1e-300
    grad[3, 2] = np.nan
    batch = HistoryRows(steps=np.arange(0, 400, 10), f=rng.standard_normal(40), grad_norm=np.abs(rng.standard_normal(40)),
                         lr=np.full(40, 0.001), x=x, grad=grad)
    save_chunk(db, job_id, "w1", batch, None, None, 30)
    rows = list(stored_rows(db, job_id))
    assert [r["step"] for r in rows] == list(range(0, 400, 10))
    assert [r["x"] for r in rows] == x.tolist() and [r["f"] for r in rows] == batch.f.tolist()
    assert rows[5]["grad"] == grad[5].tolist() and math.isnan(rows[3]["grad"][2])


def test_a_write_retried_after_an_ambiguous_commit_stores_each_step_once(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    chunk = HistoryRows(steps=[0, 1, 2], f=[3.0, 2.0, 1.0], grad_norm=[1.0] * 3, lr=[0.1] * 3)
    save_chunk(db, job_id, "w1", chunk, b"ck", 3, 30)
    save_chunk(db, job_id, "w1", chunk, b"ck", 3, 30)  # as if the first COMMIT's answer was lost
    last = HistoryRows(steps=[3], f=[0.5], grad_norm=[1.0], lr=[0.1])
    job_store.finish_job(db, job_id, "w1", JobStatus.SUCCEEDED, {"steps": 3}, None, [last])
    with pytest.raises(LeaseLost):  # the retried finish finds the job already finished
        job_store.finish_job(db, job_id, "w1", JobStatus.SUCCEEDED, {"steps": 3}, None, [last])
    assert [r["step"] for r in stored_rows(db, job_id)] == [0, 1, 2, 3]


def test_reclaim_without_a_checkpoint_starts_the_history_over(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", -1, 3)  # its lease is already over when it writes
    save_chunk(db, job_id, "w1", HistoryRows(steps=[0, 1], f=[2.0, 1.0], grad_norm=[1, 1], lr=[.1, .1]), None, None, -1)
    job = job_store.claim_job(db, job_id, "w2", 30, 3)
    assert job is not None and job.checkpoint is None and job.attempts == 2
    assert list(stored_rows(db, job_id)) == []


def test_leases_follow_the_database_clock_not_the_workers(pg_db, monkeypatch):
    """A worker whose clock is an hour slow still holds its lease for lease_seconds of real
    time, and an API host with a slow clock does not make new jobs look overdue."""
    from service.store import db as store_db

    real = store_db.utcnow
    monkeypatch.setattr(store_db, "utcnow", lambda: real() - timedelta(hours=1))
    job_id = new_job(pg_db)
    assert job_store.stale_jobs(pg_db, 30, {"cpu": 0, "gpu": 0}) == []
    assert job_store.claim_job(pg_db, job_id, "slow-clock", 30, 3) is not None
    monkeypatch.setattr(store_db, "utcnow", real)
    assert job_store.claim_job(pg_db, job_id, "w2", 30, 3) is None
    assert job_store.stale_jobs(pg_db, 30, {"cpu": 0, "gpu": 0}) == []
    assert job_store.get_job(pg_db, job_id).worker == "slow-clock"


def test_a_worker_is_alive_while_its_heartbeat_is_recent(db):
    fleet.heartbeat(db, fleet.Heartbeat("h:1", "h", 1, ["cpu"], "cpu"))
    [fresh] = fleet.list_workers(db, alive_within=30)
    assert fresh.id == "h:1" and fresh.alive and fresh.queues == ["cpu"]
    assert [w.alive for w in fleet.list_workers(db, alive_within=-60)] == [False]
    assert not fleet.live_gpu_worker(db, alive_within=30)


def test_foreign_keys_are_on_after_an_in_process_migration_on_sqlite(tmp_path):
    """The migration turns them off on its own connection; every session after it must have them
    on, or deleting a job would leave its tags and data links behind."""
    from sqlalchemy import text

    from service.store import Database
    from service.store.migrate import upgrade

    db = Database(f"sqlite:///{tmp_path / 'fk.db'}")
    upgrade(db)
    for _ in range(3):
        with db.session() as s:
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.engine.dispose()
