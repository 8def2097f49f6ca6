"""Never lose a step through a job's life: cancels of queued and running jobs, a rolling SIGTERM
restart of the workers, time limits and divergence."""
from __future__ import annotations

import signal
import time

import pytest
import requests

from service.store.jobs import get_job
from service.status import JobStatus
from tests.helpers.faults import (
    LONG,
    SHORT,
    assert_history_exact,
    expected_steps,
    wait_checkpoint,
)

pytestmark = pytest.mark.integration


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
    spec = LONG
    ids = [service.submit({**spec, "x0": [-1.2 + i / 10, 1.0]})["id"] for i in range(4)]
    wait_checkpoint(service, ids[0])
    db = service.db()
    for old in list(service.workers):
        # each SIGTERM lands on a worker in the middle of a job (one it must hand back)
        service.wait_for(lambda: any(j.status == JobStatus.RUNNING and j.checkpoint_step and
                                     j.worker.endswith(f":{old.pid}") for j in (get_job(db, i) for i in ids)),
                         f"worker {old.pid} is running a job it has checkpointed")
        service.kill_worker(old, signal.SIGTERM)
        service.start_worker()
        service.wait_for_workers(2)  # the replacement heartbeats before the next worker stops
    db.engine.dispose()
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
