"""Never lose a step: real worker processes killed, brokers flushed and restarted, the database
restarted, jobs cancelled and workers restarted one by one; assertions on the stored history."""
from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from service.engine import run
from service.spec import check_spec
from service.store import jobs as job_store
from service.store.models import HistoryRow
from testkit.processes import Service
from tests.helpers.line_fit import line_fit
from service.store.status import JobStatus

pytestmark = pytest.mark.integration


LONG = {"objective": {"name": "rosenbrock"}, "steps": 60_000, "record": {"every": 50},
        "optimizer": {"name": "adam", "lr": 0.001}}
SHORT = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 50, "optimizer": {"name": "sgd", "lr": 0.01}}


def clean_run(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    chunks: list[Any] = []
    result = run(check_spec(spec), on_chunk=chunks.append)
    return [r for c in chunks for r in c.batch.rows()], result


def expected_steps(spec: dict[str, Any], last: int) -> list[int]:
    every = spec.get("record", {}).get("every", 1)
    steps = list(range(0, last + 1, every))
    return steps if steps[-1] == last else steps + [last]


def assert_history_exact(service: Service, job: dict[str, Any], spec: dict[str, Any]) -> None:
    """Every step once, no gap, and x and f equal to an uninterrupted run's, bit for bit."""
    db = service.db()
    with db.session() as s:
        total, distinct = s.execute(select(func.count(), func.count(func.distinct(HistoryRow.step)))
                                    .where(HistoryRow.job_id == job["id"])).one()
    db.engine.dispose()
    rows = service.history(job["id"])
    assert total == distinct == len(rows)
    assert [r["step"] for r in rows] == expected_steps(spec, job["result"]["steps"])
    clean_rows, clean = clean_run(spec)
    assert job["result"]["x"] == clean.x and job["result"]["f"] == clean.f
    flat = [{"step": r["step"], "f": r["f"], "x": [v for v in r["x"]]} for r in rows]
    assert flat == [{"step": r["step"], "f": r["f"], "x": r["x"]} for r in clean_rows]


def wait_checkpoint(service: Service, job_id: str, timeout: float = 30) -> Any:
    db = service.db()
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            job = job_store.get_job(db, job_id)
            if job.checkpoint_step:
                return job
            time.sleep(0.05)
    finally:
        db.engine.dispose()
    raise AssertionError(f"job {job_id} wrote no checkpoint\n{service.logs()}")


def holder(service: Service, job: Any) -> Any:
    pid = int(job.worker.rsplit(":", 1)[1])
    return next(p for p in service.workers if p.pid == pid)


def kill9_mid_job_and_check(service: Service, spec: dict[str, Any] = LONG) -> None:
    job_id = service.submit(spec)["id"]
    running = wait_checkpoint(service, job_id)
    service.kill_worker(holder(service, running), signal.SIGKILL)
    job = service.wait(job_id, timeout=120)
    assert job["status"] == JobStatus.SUCCEEDED and job["attempts"] == 2, job
    assert job["result"]["worker"] != running.worker
    assert_history_exact(service, job, spec)


def test_kill9_mid_job_resumes_from_the_checkpoint(make_service):
    kill9_mid_job_and_check(make_service(workers=2))


def test_kill9_mid_job_on_the_embedded_default(make_embedded_service):
    """The SQL broker never re-delivers a message its consumer took: the reconciler of the
    surviving worker requeues the job once its lease lapses."""
    kill9_mid_job_and_check(make_embedded_service(workers=2))


def test_kill9_mid_job_of_data_resumes_on_the_same_data(make_service):
    """A job fitting a line to 100 points: the resumed run reads the stored data again and ends
    as an uninterrupted run on that data would."""
    kill9_mid_job_and_check(make_service(workers=2), line_fit({"name": "sgd", "lr": 0.0005}, 60_000,
                                                              record={"every": 50}))


def test_kill9_mid_batch_resumes_every_job_from_its_own_checkpoint(make_service):
    """A worker killed while it runs four jobs as one batch: no step lost or stored twice, each job
    resumes from its own checkpoint (the four again as one batch) and ends as an uninterrupted
    solo run of it would."""
    service = make_service(workers=2)
    starts = [[-1.2, 1.0], [0.5, -0.3], [1.5, 2.0], [-0.1, 0.7]]
    resp = service.http.post(service.url + "/v1/sweeps", json={"base": LONG, "starts": starts}, timeout=30)
    assert resp.status_code == 202, resp.text
    ids = [j["id"] for j in service.http.get(service.url + resp.json()["links"]["jobs"], timeout=30).json()["jobs"]]
    running = [wait_checkpoint(service, job_id) for job_id in ids]
    assert len({job.worker for job in running}) == 1  # one batch, on one worker
    service.kill_worker(holder(service, running[0]), signal.SIGKILL)
    for job_id, x0 in zip(ids, starts):
        job = service.wait(job_id, timeout=120)
        assert job["status"] == JobStatus.SUCCEEDED and job["attempts"] == 2, job
        assert job["result"]["worker"] != running[0].worker
        assert_history_exact(service, job, {**LONG, "x0": x0})


def test_job_that_keeps_killing_its_workers_fails_after_max_attempts(make_service):
    service = make_service(workers=2, max_attempts=2)
    job_id = service.submit(LONG)["id"]
    killed = set()
    deadline = time.time() + 90
    while time.time() < deadline:
        job = service.job(job_id)
        if job["status"] == JobStatus.FAILED:
            break
        if job["status"] == JobStatus.RUNNING and job["worker"] not in killed:
            killed.add(job["worker"])
            service.kill_worker(holder(service, job_store.get_job(service.db(), job_id)), signal.SIGKILL)
            service.start_worker()
        time.sleep(0.05)
    job = service.job(job_id)
    assert job["status"] == JobStatus.FAILED and len(killed) == 2
    assert "gave up after 2 attempts" in job["error"]


@pytest.mark.parametrize("fault", ["flushall", "restart"])
def test_queued_jobs_survive_a_broker_flush_or_restart(make_service, redis_server, fault):
    service = make_service(workers=0)
    ids = [service.submit({**SHORT, "seed": i})["id"] for i in range(50)]
    if fault == "flushall":
        redis_server.flushall()
    else:
        redis_server.restart()
    service.start_worker()
    service.start_worker()
    jobs = [service.wait(i, timeout=120, poll=0.2) for i in ids]
    assert all(j["status"] == JobStatus.SUCCEEDED and j["attempts"] == 1 for j in jobs)
    for job in jobs[:3]:
        assert_history_exact(service, job, SHORT)
    db = service.db()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(HistoryRow).where(HistoryRow.job_id.in_(ids))) == 50 * 51
    db.engine.dispose()


def test_broker_restart_while_workers_run(make_service, redis_server):
    service = make_service(workers=2)
    long_id = service.submit(LONG)["id"]
    wait_checkpoint(service, long_id)
    redis_server.restart()
    ids = [service.submit({**SHORT, "seed": i})["id"] for i in range(10)]
    assert all(service.wait(i, timeout=120, poll=0.2)["status"] == JobStatus.SUCCEEDED for i in ids)
    job = service.wait(long_id, timeout=120)
    assert job["status"] == JobStatus.SUCCEEDED
    assert_history_exact(service, job, LONG)


def test_postgres_restart_mid_run(make_service, postgres):
    service = make_service(workers=2)
    job_id = service.submit(LONG)["id"]
    wait_checkpoint(service, job_id)
    postgres.stop()
    try:
        ready = requests.get(service.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("down")
        assert ready.json()["checks"]["broker"] == "ok"
        resp = requests.get(f"{service.url}/v1/jobs/{job_id}", timeout=10)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "database_unavailable"
        time.sleep(1.0)
    finally:
        postgres.start()
    job = service.wait(job_id, timeout=120)
    assert job["status"] == JobStatus.SUCCEEDED, job
    assert requests.get(service.url + "/readyz", timeout=10).status_code == 200
    assert_history_exact(service, job, LONG)


def test_cancel_queued_and_running(make_service, redis_server):
    service = make_service(workers=1)
    running_id = service.submit(LONG)["id"]
    service.wait_status(running_id, JobStatus.RUNNING)
    queued_id = service.submit(SHORT)["id"]
    resp = requests.post(f"{service.url}/v1/jobs/{queued_id}/cancel", timeout=10)
    assert resp.status_code == 202 and resp.json()["status"] == JobStatus.CANCELLED

    wait_checkpoint(service, running_id)
    asked = time.time()
    assert requests.post(f"{service.url}/v1/jobs/{running_id}/cancel", timeout=10).status_code == 202
    job = service.wait(running_id, timeout=10, poll=0.02)
    assert job["status"] == JobStatus.CANCELLED and time.time() - asked < 1.0
    rows = service.history(running_id)
    assert rows and rows[-1]["step"] == job["result"]["steps"]
    assert [r["step"] for r in rows] == expected_steps(LONG, job["result"]["steps"])

    # the cancelled queued job's message is delivered and acknowledged; the job must not have run
    service.wait_for(lambda: redis_server.pending("cpu") == 0, "the worker has taken and acknowledged every message")
    queued = service.job(queued_id)
    assert queued["status"] == JobStatus.CANCELLED and queued["started_at"] is None and service.history(queued_id) == []
    resp = requests.post(f"{service.url}/v1/jobs/{running_id}/cancel", timeout=10)
    assert resp.status_code == 409 and "already cancelled" in resp.json()["error"]["message"]


def test_sigterm_rolling_restart_loses_nothing(make_service):
    service = make_service(workers=2)
    spec = {**LONG, "steps": 30_000}
    ids = [service.submit({**spec, "x0": [-1.2 + i / 10, 1.0]})["id"] for i in range(4)]
    wait_checkpoint(service, ids[0])
    for old in list(service.workers):
        service.kill_worker(old, signal.SIGTERM)
        service.start_worker()
        service.wait_for_workers(2)  # the replacement heartbeats before the next worker stops
    jobs = [service.wait(i, timeout=180) for i in ids]
    assert all(j["status"] == JobStatus.SUCCEEDED for j in jobs), [j["status"] for j in jobs]
    for i, job in enumerate(jobs):
        assert_history_exact(service, job, {**spec, "x0": [-1.2 + i / 10, 1.0]})
    # a job handed back on SIGTERM is not charged an attempt, and the restarted workers finished some
    assert all(j["attempts"] == 1 for j in jobs), [j["attempts"] for j in jobs]
    new_pids = {p.pid for p in service.workers[2:]}
    assert any(int(j["result"]["worker"].rsplit(":", 1)[1]) in new_pids for j in jobs)


def test_time_limit_and_divergence_end_as_succeeded_with_reason(make_service):
    service = make_service(workers=1)
    timed = service.wait(service.submit({**LONG, "steps": 1_000_000, "stop": {"max_seconds": 0.5}})["id"])
    assert timed["status"] == JobStatus.SUCCEEDED and timed["result"]["stop_reason"] == "time_limit"
    diverged = service.wait(service.submit({**SHORT, "steps": 10_000, "optimizer": {"name": "sgd", "lr": 1.0}})["id"])
    assert diverged["status"] == JobStatus.SUCCEEDED and diverged["result"]["stop_reason"] == "diverged"
    assert service.history(diverged["id"])[-1]["step"] == diverged["result"]["steps"]
