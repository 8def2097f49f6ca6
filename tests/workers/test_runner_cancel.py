"""Cancels and time limits reach a job inside one long optimiser step (LBFGS), through the
worker's runner on the embedded backend; a job whose cancel the runner knows of never succeeds."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from service.engine import Chunking
from service.store import jobs as job_store
from service.store.models import Job
from service.status import JobStatus
from workers import pacing, runner

# Each step is 10,000 LBFGS iterations on 20,000 elements with a full memory: tens of seconds
# on any machine. Only an abort inside the step ends these jobs at step 0.
LONG_STEP = {"objective": "((x - 3) ** 2).sum() + (x ** 4).sum() / 100",
             "x0": {"shape": [20_000], "init": "normal", "seed": 1}, "steps": 5,
             "optimizer": {"name": "lbfgs", "lr": 1e-6, "max_iter": 10_000, "tolerance_grad": -1,
                           "tolerance_change": -1},
             "record": {"x": False}, "stop": {"max_seconds": 300}}


def submit(client: Any, spec: dict[str, Any]) -> str:
    resp = client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp.get_json()["id"]


def lease_expires_at(db: Any, job_id: str) -> Any:
    with db.session() as s:
        return s.scalar(select(Job.lease_expires_at).where(Job.id == job_id))


def in_background(run_job: Any, job_id: str) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(run_job(job_id)), daemon=True)
    thread.start()
    return thread, outcome


def wait_running(client: Any, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/jobs/{job_id}").get_json()["status"] != JobStatus.RUNNING:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_cancel_during_a_long_lbfgs_step_ends_the_job_cancelled_at_once(app, client, run_job):
    db = app.extensions["descent"].db
    job_id = submit(client, LONG_STEP)
    thread, outcome = in_background(run_job, job_id)
    wait_running(client, job_id)
    claimed_until = lease_expires_at(db, job_id)
    deadline = time.monotonic() + 30
    while lease_expires_at(db, job_id) <= claimed_until:  # inside step 0 the runner polls the store,
        assert time.monotonic() < deadline, "the lease was never renewed inside the step"  # renewing it
        time.sleep(0.05)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    thread.join(60)  # a backstop only: the step itself would take far longer than the poll
    assert not thread.is_alive() and outcome == [JobStatus.CANCELLED]
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == JobStatus.CANCELLED
    assert job["result"]["stop_reason"] == "cancelled" and job["result"]["steps"] == 0
    rows = client.get(f"/v1/jobs/{job_id}/history").get_json()["rows"]
    assert [r["step"] for r in rows] == [0] and rows[0]["f"] == job["result"]["f"]


def test_the_time_limit_ends_a_long_lbfgs_step(app, client, run_job):
    job_id = submit(client, {**LONG_STEP, "stop": {"max_seconds": 1}})
    thread, outcome = in_background(run_job, job_id)
    thread.join(60)
    assert not thread.is_alive() and outcome == [JobStatus.SUCCEEDED]
    result = client.get(f"/v1/jobs/{job_id}").get_json()["result"]
    assert result["stop_reason"] == "time_limit" and result["steps"] == 0


def test_a_run_that_ends_on_its_own_after_a_known_cancel_ends_cancelled(app, client, run_job, monkeypatch):
    """The cancel arrives with the last chunk's save, after the run's last stop check: the run
    then ends by its step count, and the runner still ends the job cancelled."""
    db = app.extensions["descent"].db
    monkeypatch.setattr(pacing, "CHUNKING", Chunking(rows=100, seconds=3600))
    real_save = runner.save_chunk

    def save_chunk(db_: Any, job_id_: str, worker: str, batch: Any, checkpoint: Any, end: int, lease: float,
                   progress: Any = None) -> bool:
        if end == 500:
            job_store.request_cancel(db, job_id_)
        return real_save(db_, job_id_, worker, batch, checkpoint, end, lease, progress)

    monkeypatch.setattr(runner, "save_chunk", save_chunk)
    job_id = submit(client, {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500,
                             "optimizer": {"name": "sgd", "lr": 0.001}})
    assert run_job(job_id) == JobStatus.CANCELLED
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == JobStatus.CANCELLED and job["result"]["stop_reason"] == "steps"
