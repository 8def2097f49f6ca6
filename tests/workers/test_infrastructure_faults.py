"""Infrastructure faults are not the job's (on SQLite and PostgreSQL, with the worker's own code):
a database outage or a read-only database during a job charges it no attempt, and a message that
meets one is kept; a chunk the database lost after acknowledging it is noticed at the next renewal,
and the job resumes from what is stored."""
from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Reject
from sqlalchemy import text, update
from sqlalchemy.exc import InternalError

from service.rows import HistoryRows
from service.store import JobStatus, LeaseLost, StoreUnavailable
from service.store import jobs as job_store
from service.store.history import save_chunk
from service.store.chunks import cut
from service.store.models import Job, history_rows
from tests.store.test_store import new_job
from tests.workers.test_batch import BASE, STARTS, Service, assert_is_solo_run, thousand_row_chunks  # noqa: F401
from workers import batch as worker_batch
from workers import outages, runner, tasks
from workers import fleet as worker_fleet
from workers import state as worker_state
from workers.state import _identity

pytestmark = pytest.mark.usefixtures("thousand_row_chunks")

# Chunks end every 1,000 rows here: four of them (each saved with a checkpoint) and a final one.
SPEC = {"objective": "10 * (x ** 2).sum()", "x0": [8.0, 8.0], "steps": 4500,
        "optimizer": {"name": "sgd", "lr": 0.0001}, "device": "cpu"}


@pytest.fixture
def service(db, tmp_path):  # type: ignore[no-untyped-def]
    return Service(db, tmp_path)


@pytest.fixture
def impatient(monkeypatch):  # type: ignore[no-untyped-def]
    """Workers give up on the store after a fraction of a second (not five minutes)."""
    monkeypatch.setattr(outages, "STORE_PATIENCE", 0.3)


def this_process(service: Service) -> Any:
    """A worker state for this process's tasks to find (``workers.state.get_state``)."""
    state = service.worker()
    state.worker_id = _identity()
    return state


def stored(db: Any, job_id: str) -> job_store.JobRecord:
    return job_store.get_job(db, job_id)


def failing_after(real: Any, calls: int, error: Exception) -> Any:
    """``real``, but raising ``error`` from its ``calls``-th call on."""
    made = [0]

    def call(*args: Any, **kwargs: Any) -> Any:
        made[0] += 1
        if made[0] >= calls:
            raise error
        return real(*args, **kwargs)

    return call


@pytest.mark.slow  # whole jobs, run twice: seconds each
def test_an_outage_past_the_retries_hands_the_job_back_without_charging_an_attempt(service, impatient, monkeypatch):
    job_id = service.submit(SPEC)
    monkeypatch.setattr(runner, "save_chunk", failing_after(save_chunk, 2, StoreUnavailable("test outage")))
    state = service.worker()
    assert runner.execute(state, job_id) == "released"
    job = stored(service.db, job_id)
    assert (job.status, job.attempts, job.worker) == (JobStatus.QUEUED, 0, None)
    monkeypatch.setattr(runner, "save_chunk", save_chunk)
    assert runner.execute(state, job_id) == JobStatus.SUCCEEDED
    assert stored(service.db, job_id).attempts == 1
    assert_is_solo_run(service, job_id, SPEC)


@pytest.mark.slow  # whole jobs, run twice: seconds each
def test_a_message_that_meets_an_outage_is_kept_and_its_job_handed_back_by_the_heartbeat(service, impatient,
                                                                                         monkeypatch):
    """Down even for the hand-back: the task puts its message back (Reject with requeue, not an
    ack), and the heartbeat thread keeps the job's lease and hands it back once the database answers."""
    job_id = service.submit(SPEC)
    state = this_process(service)
    monkeypatch.setattr(worker_state, "_state", state)
    monkeypatch.setattr(tasks, "REQUEUE_PAUSE_SECONDS", 0.0)
    outage = StoreUnavailable("test outage")
    monkeypatch.setattr(runner, "save_chunk", failing_after(save_chunk, 2, outage))
    real_release = job_store.release_jobs
    monkeypatch.setattr(job_store, "release_jobs", failing_after(real_release, 1, outage))
    with pytest.raises(Reject) as rejected:
        tasks.run_job(job_id)
    assert rejected.value.requeue is True
    assert state.handback == {job_id}
    job = stored(service.db, job_id)
    assert (job.status, job.worker, job.attempts) == (JobStatus.RUNNING, state.worker_id, 1)
    monkeypatch.setattr(job_store, "release_jobs", real_release)  # the database answers again
    worker_fleet.beat_once(state)
    job = stored(service.db, job_id)
    assert (job.status, job.attempts, state.handback) == (JobStatus.QUEUED, 0, set())
    monkeypatch.setattr(runner, "save_chunk", save_chunk)
    assert tasks.run_job(job_id) == str(JobStatus.SUCCEEDED)
    assert stored(service.db, job_id).attempts == 1
    assert_is_solo_run(service, job_id, SPEC)


def test_a_claim_that_meets_an_outage_keeps_its_message(service, impatient, monkeypatch):
    job_id = service.submit(SPEC)
    monkeypatch.setattr(worker_state, "_state", this_process(service))
    monkeypatch.setattr(tasks, "REQUEUE_PAUSE_SECONDS", 0.0)
    monkeypatch.setattr(runner, "claim_batch", failing_after(None, 1, StoreUnavailable("test outage")))
    with pytest.raises(Reject) as rejected:
        tasks.run_jobs([job_id])
    assert rejected.value.requeue is True
    job = stored(service.db, job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)


def test_a_crash_of_the_job_itself_is_not_kept(service, monkeypatch):
    monkeypatch.setattr(worker_state, "_state", this_process(service))
    monkeypatch.setattr(runner, "execute", failing_after(None, 1, KeyError("a bug")))
    with pytest.raises(KeyError):
        tasks.run_job(service.submit(SPEC))


def test_what_counts_as_an_infrastructure_fault():
    import psycopg

    read_only = InternalError("UPDATE jobs", None, psycopg.errors.ReadOnlySqlTransaction("read-only transaction"))
    assert outages.infrastructure_fault(read_only)
    assert outages.infrastructure_fault(StoreUnavailable("down"))
    assert not outages.infrastructure_fault(RuntimeError("the objective failed"))
    assert not outages.infrastructure_fault(InternalError("x", None, psycopg.errors.DivisionByZero("x")))
    assert not outages.infrastructure_fault(LeaseLost("taken"))


@pytest.mark.slow  # whole jobs, run twice: seconds each
def test_a_read_only_database_during_a_job_charges_no_attempt(pg_db, tmp_path, monkeypatch):
    """A failover in progress (``default_transaction_read_only``): the worker's writes fail and are
    retried until the database takes writes again; the job ends on its first attempt, its history
    exactly its solo run's."""
    service = Service(pg_db, tmp_path)
    job_id = service.submit(SPEC)
    name = pg_db.engine.url.database

    def read_only(on: bool) -> None:
        with pg_db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SET default_transaction_read_only = off"))  # this session may write, to undo it
            conn.execute(text(f'ALTER DATABASE "{name}" ' + ("SET default_transaction_read_only = on" if on
                                                              else "RESET default_transaction_read_only")))
        pg_db.engine.dispose()  # new sessions read the setting

    calls, failed = [0], [0]

    def save(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            read_only(True)
        try:
            return save_chunk(*args, **kwargs)
        except Exception:
            failed[0] += 1
            if failed[0] == 2:
                read_only(False)
            raise

    monkeypatch.setattr(runner, "save_chunk", save)
    try:
        assert runner.execute(service.worker(), job_id) == JobStatus.SUCCEEDED
    finally:
        read_only(False)
    assert failed[0] == 2
    assert stored(pg_db, job_id).attempts == 1
    assert_is_solo_run(service, job_id, SPEC)


# --- a chunk the database lost after acknowledging it -------------------------------------------------


def lose_last_commit(db: Any, job_id: str, first_step: int, checkpoint: Any) -> None:
    """What a crash of a database that did not flush it leaves: the chunk from ``first_step`` on is
    gone, and the checkpoint is back where it was (``checkpoint``: (bytes, step))."""
    with db.session() as s:
        cut(s, {job_id: first_step})
        s.execute(update(Job).where(Job.id == job_id).values(checkpoint=checkpoint[0], checkpoint_step=checkpoint[1]))


def checkpoint_of(db: Any, job_id: str) -> tuple[Any, Any]:
    job = job_store.get_job(db, job_id, with_checkpoint=True)
    return job.checkpoint, job.checkpoint_step


def batch(steps: range) -> HistoryRows:
    n = len(steps)
    return HistoryRows(steps=list(steps), f=[1.0] * n, grad_norm=[1.0] * n, lr=[0.1] * n)


def test_a_renewal_finds_a_stored_history_behind_what_the_worker_wrote(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w:1", 30, 3)
    written = {job_id: job_store.Written(None, None)}
    with job_store.believing(written) as behind:
        save_chunk(db, job_id, "w:1", batch(range(0, 5)), b"at-5", 5, 30)
        written[job_id] = job_store.Written(4, 5)
        before = checkpoint_of(db, job_id)
        save_chunk(db, job_id, "w:1", batch(range(5, 10)), b"at-10", 10, 30)
        written[job_id] = job_store.Written(9, 10)
        assert job_store.renew(db, job_id, "w:1", 30) is False and behind == set()
        lose_last_commit(db, job_id, 5, before)
        with pytest.raises(LeaseLost):
            job_store.renew(db, job_id, "w:1", 30)
        with pytest.raises(LeaseLost):
            save_chunk(db, job_id, "w:1", batch(range(10, 15)), None, None, 30)
        with pytest.raises(LeaseLost):
            job_store.finish_job(db, job_id, "w:1", JobStatus.SUCCEEDED, {"steps": 15}, None, [batch(range(10, 15))])
        assert behind == {job_id}
    assert sorted(r.step for r in job_store_rows(db, job_id)) == list(range(5))  # no gap was written
    assert stored(db, job_id).status == JobStatus.RUNNING
    assert job_store.renew(db, job_id, "w:1", 30) is False  # outside ``believing``: the lease alone


def job_store_rows(db: Any, job_id: str) -> list[Any]:
    from sqlalchemy import select

    with db.session() as s:
        return list(s.execute(select(history_rows.c.step).where(history_rows.c.job_id == job_id)).all())


@pytest.mark.slow  # whole jobs, run twice: seconds each
def test_a_lost_chunk_stops_the_job_and_it_resumes_from_what_is_stored(service, monkeypatch):
    job_id = service.submit(SPEC)
    saves, kept = [0], []

    def save(db: Any, job: str, worker: str, rows: HistoryRows, *args: Any, **kwargs: Any) -> bool:
        saves[0] += 1
        before = checkpoint_of(db, job)
        requested = save_chunk(db, job, worker, rows, *args, **kwargs)
        if saves[0] == 3:  # acknowledged, then lost by the database
            lose_last_commit(db, job, int(rows.steps[0]), before)
            kept.append(before[1])
        return requested

    monkeypatch.setattr(runner, "save_chunk", save)
    state = service.worker()
    assert runner.execute(state, job_id) == "released"
    assert saves[0] == 4  # the next save found the history behind, and wrote nothing
    job = stored(service.db, job_id)
    assert (job.status, job.attempts, job.checkpoint_step) == (JobStatus.QUEUED, 0, kept[0])
    assert runner.execute(state, job_id) == JobStatus.SUCCEEDED
    assert stored(service.db, job_id).attempts == 1
    assert_is_solo_run(service, job_id, SPEC)


@pytest.mark.slow  # whole jobs, run twice: seconds each
def test_a_lost_chunk_of_one_lane_hands_back_that_job_alone(service, monkeypatch):
    spec = {**BASE, "steps": 3000, "record": {"every": 1, "x": True, "grad": False}}
    specs = [{**spec, "x0": x0} for x0 in STARTS[:3]]
    ids = [service.submit(s) for s in specs]
    victim = ids[1]
    real, saves = worker_batch.save_chunks, [0]

    def save(db: Any, worker: str, chunks: list[Any], lease: float) -> dict[str, bool]:
        saves[0] += 1
        mine = next((c for c in chunks if c.job_id == victim), None)
        before = checkpoint_of(db, victim)
        held = real(db, worker, chunks, lease)
        if saves[0] == 2 and mine is not None and len(mine.rows):
            lose_last_commit(db, victim, int(mine.rows.steps[0]), before)
        return held

    monkeypatch.setattr(worker_batch, "save_chunks", save)
    state = service.worker(batch_max=8)
    outcomes = runner.execute_message(state, ids)
    assert outcomes[victim] == "released"
    assert [outcomes[i] for i in ids if i != victim] == [JobStatus.SUCCEEDED] * 2
    assert (stored(service.db, victim).status, stored(service.db, victim).attempts) == (JobStatus.QUEUED, 0)
    monkeypatch.setattr(worker_batch, "save_chunks", real)
    assert runner.execute(state, victim) == JobStatus.SUCCEEDED
    for job_id, s in zip(ids, specs):
        assert_is_solo_run(service, job_id, s)


def test_a_fault_the_jobs_own_statement_can_cause_again_is_charged_to_it():
    """A statement past the statement timeout, the server out of memory on it or a row too big
    would come back on every retry: the job's attempts must run out, not be handed back forever.
    A read-only database or a lost connection is never the job's."""
    import psycopg
    from sqlalchemy.exc import InternalError, OperationalError

    from service.store.db import unavailable_reason
    from workers.outages import infrastructure_fault

    for driver in (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
                   psycopg.errors.OutOfMemory("out of memory"), psycopg.errors.ProgramLimitExceeded("row is too big")):
        wrapped = OperationalError("UPDATE jobs", {}, driver)
        unavailable = StoreUnavailable("the database is unavailable")
        unavailable.__cause__ = wrapped
        assert not infrastructure_fault(wrapped) and not infrastructure_fault(unavailable), driver
    assert unavailable_reason(OperationalError("INSERT", {}, psycopg.errors.ProgramLimitExceeded("row is too big"))) is None
    read_only = InternalError("INSERT", {}, psycopg.errors.ReadOnlySqlTransaction("read-only transaction"))
    assert infrastructure_fault(read_only) and unavailable_reason(read_only)
    lost = OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly"))
    assert infrastructure_fault(lost) and unavailable_reason(lost)
