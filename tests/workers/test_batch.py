"""Batched execution in the worker (``workers.batch``), on SQLite and PostgreSQL, with real parts:
compatible jobs from any source run as one batch, each job's stored history and result equal its
solo run, and stops, cancels, lost leases and hand-backs stay per job."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from service.api import create_app
from service.jsonsafe import json_safe
from service.store import JobStatus
from service.store import jobs as job_store
from service.store.history import iter_history
from service.store.models import Job
from testkit.backends import embedded_settings
from tests.engine.test_batched import assert_same
from tests.helpers.engine import run_spec
from workers import runner
from workers.state import WorkerState

ROSENBROCK = "100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2"
BASE = {"objective": ROSENBROCK, "steps": 60, "optimizer": {"name": "adam", "lr": 0.01},
        "scheduler": {"name": "step_lr", "step_size": 9, "gamma": 0.5},
        "record": {"every": 2, "x": True, "grad": True}, "device": "cpu"}
STARTS = [[-1.2, 1.0], [0.5, -0.3], [2.0, 2.0], [-0.1, 0.7], [1.5, 0.0]]


class Service:
    """The API app and a worker's state on one database, with the embedded broker."""

    def __init__(self, db: Any, tmp_path: Any) -> None:
        self.app = create_app(embedded_settings(tmp_path, database_url=db.url), {"TESTING": True}, db=db)
        self.client = self.app.test_client()
        self.svc = self.app.extensions["descent"]
        self.db = db

    def submit(self, spec: dict) -> str:
        resp = self.client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json")
        assert resp.status_code == 202, resp.get_json()
        return resp.get_json()["id"]

    def worker(self, **settings: Any) -> WorkerState:
        return WorkerState(settings=replace(self.svc.settings, **settings), db=self.db, worker_id="test:1",
                           hostname="test", queues=["cpu"], device="cpu", dispatcher=self.svc.dispatcher)

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/v1/jobs/{job_id}").get_json()

    def rows(self, job_id: str) -> list[dict]:
        return [row for batch in iter_history(self.db, job_id) for row in batch.rows()]

    def messages(self) -> list[list[str]]:
        """The job ids of every message waiting in the embedded broker's cpu queue."""
        path = str(self.svc.settings.data_dir / "broker.db")
        with sqlite3.connect(path) as conn:
            payloads = conn.execute("SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
                                    "WHERE q.name = 'cpu' AND m.visible ORDER BY m.id").fetchall()
        out = []
        for (payload,) in payloads:
            body = json.loads(payload)
            args = json.loads(__import__("base64").b64decode(body["body"]))[0]
            out.append(args[0] if isinstance(args[0], list) else [args[0]])
        return out


@pytest.fixture
def service(db, tmp_path):  # type: ignore[no-untyped-def]
    return Service(db, tmp_path)


def assert_is_solo_run(service: Service, job_id: str, spec: dict) -> None:
    result, rows, _ = run_spec(spec)
    job = service.job(job_id)
    assert job["status"] == JobStatus.SUCCEEDED, job
    stored = service.rows(job_id)
    assert [r["step"] for r in stored] == [r["step"] for r in rows]
    keys = [k for k in ("f", "grad_norm", "lr", "x", "grad") if k in rows[0]]
    assert_same([{k: r[k] for k in keys} for r in stored], [{k: r[k] for k in keys} for r in rows], 1e-6)
    want = result.as_json()
    for key in ("x", "f", "grad_norm", "steps", "stop_reason", "grad", "graph"):
        if key not in want:
            assert key not in job["result"]
            continue
        assert_same(job["result"][key], json_safe(want[key]), 1e-6)


def test_compatible_jobs_submitted_one_by_one_run_as_one_batch_each_its_solo_run(service):
    specs = [{**BASE, "x0": x0, "name": f"start {i}"} for i, x0 in enumerate(STARTS)]
    ids = [service.submit(spec) for spec in specs]
    other = service.submit({**BASE, "x0": STARTS[0], "optimizer": {"name": "adam", "lr": 0.02}})
    lbfgs = service.submit({**BASE, "x0": STARTS[0], "optimizer": {"name": "lbfgs"}, "scheduler": None})
    outcomes = runner.execute_message(service.worker(), [ids[2]])
    assert outcomes == {job_id: JobStatus.SUCCEEDED for job_id in ids}
    for job_id, spec in zip(ids, specs):
        assert_is_solo_run(service, job_id, spec)
        assert service.job(job_id)["result"]["worker"] == "test:1"
    assert service.job(other)["status"] == service.job(lbfgs)["status"] == JobStatus.QUEUED
    assert runner.execute(service.worker(), lbfgs) == JobStatus.SUCCEEDED  # LBFGS runs alone


def test_batching_off_runs_one_job_per_message(service):
    ids = [service.submit({**BASE, "x0": x0}) for x0 in STARTS[:3]]
    assert runner.execute_message(service.worker(batch_max=1), [ids[0]]) == {ids[0]: JobStatus.SUCCEEDED}
    assert [service.job(i)["status"] for i in ids[1:]] == [JobStatus.QUEUED] * 2


def test_a_message_naming_more_jobs_than_a_batch_holds_sends_the_rest_on(service):
    ids = [service.submit({**BASE, "x0": x0}) for x0 in STARTS]
    before = service.messages()
    outcomes = runner.execute_message(service.worker(batch_max=2), ids)
    assert [outcomes[i] for i in ids] == [JobStatus.SUCCEEDED] * 2 + ["skipped"] * 3
    assert service.messages() == before + [ids[2:]]
    assert runner.execute_message(service.worker(batch_max=5), ids[2:]) == dict.fromkeys(ids[2:], JobStatus.SUCCEEDED)


def test_a_mixed_batch_diverges_stops_and_is_cancelled_per_job(service):
    base = {"objective": "(x ** 4).sum()", "steps": 20_000, "optimizer": {"name": "sgd", "lr": 1e-6},
            "stop": {"grad_norm": 1e-3}, "record": {"every": 1000}, "device": "cpu"}
    starts = {"grad_norm": [1e-4, 0.0], "diverged": [1e12, 1e12], "cancelled": [5.0, 5.0], "steps": [4.0, 4.0]}
    ids = {name: service.submit({**base, "x0": x0}) for name, x0 in starts.items()}
    outcomes: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcomes.update(runner.execute_message(service.worker(), [ids["steps"]])))
    worker.start()
    deadline = time.monotonic() + 30
    while service.job(ids["cancelled"])["status"] != JobStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.client.post(f"/v1/jobs/{ids['cancelled']}/cancel").status_code == 202
    worker.join(120)
    assert not worker.is_alive()
    jobs = {name: service.job(job_id) for name, job_id in ids.items()}
    assert {name: job["status"] for name, job in jobs.items()} == {
        "grad_norm": "succeeded", "diverged": "succeeded", "cancelled": "cancelled", "steps": "succeeded"}
    assert jobs["grad_norm"]["result"]["stop_reason"] == "grad_norm" and jobs["grad_norm"]["result"]["steps"] == 0
    assert jobs["diverged"]["result"]["stop_reason"] == "diverged"
    assert jobs["steps"]["result"]["steps"] == 20_000
    cancelled = jobs["cancelled"]["result"]
    assert cancelled["stop_reason"] == "cancelled" and 0 < cancelled["steps"] < 20_000
    for name in ("grad_norm", "diverged", "steps"):
        assert_is_solo_run(service, ids[name], {**base, "x0": starts[name]})
    solo_rows = run_spec({**base, "x0": starts["cancelled"]})[1]
    stored = service.rows(ids["cancelled"])
    assert stored[-1]["step"] == cancelled["steps"]
    assert_same(stored[:-1], [r for r in solo_rows if r["step"] < cancelled["steps"]], 1e-6)


def test_a_lane_whose_lease_is_lost_is_dropped_and_the_rest_finish(service, db):
    long = {**BASE, "steps": 30_000, "record": {"every": 1_000, "x": True, "grad": False}, "scheduler": None,
            "optimizer": {"name": "sgd", "lr": 1e-7}}
    ids = [service.submit({**long, "x0": x0}) for x0 in STARTS[:3]]
    outcomes: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcomes.update(runner.execute_message(service.worker(), ids[:1])))
    worker.start()
    deadline = time.monotonic() + 30
    while service.job(ids[1])["status"] != JobStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    with db.session() as s:  # its lease lapses (as if this worker had stalled) and another worker takes it
        s.execute(update(Job).where(Job.id == ids[1]).values(lease_expires_at=Job.started_at))
    taken = job_store.claim_job(db, ids[1], "other:2", 30, 3)
    assert taken is not None
    worker.join(120)
    assert not worker.is_alive()
    assert outcomes[ids[1]] == "lease_lost"
    assert outcomes[ids[0]] == outcomes[ids[2]] == JobStatus.SUCCEEDED
    job = service.job(ids[1])
    assert job["status"] == JobStatus.RUNNING and job["worker"] == "other:2"


def test_a_batch_handed_back_at_shutdown_resumes_as_a_batch_and_equals_solo_runs(service):
    long = {**BASE, "steps": 3_000, "record": {"every": 100, "x": True, "grad": True}}
    specs = [{**long, "x0": x0} for x0 in STARTS[:3]]
    ids = [service.submit(spec) for spec in specs]
    state = service.worker()
    threading.Timer(0.4, state.shutting_down.set).start()
    before = service.messages()
    assert runner.execute_message(state, ids[:1]) == dict.fromkeys(ids, "released")
    steps = {job_store.get_job(service.db, i).checkpoint_step for i in ids}
    assert len(steps) == 1 and 0 < steps.pop() < 3_000
    assert service.messages() == before + [ids]
    assert all(service.job(i)["status"] == JobStatus.QUEUED for i in ids)
    assert runner.execute_message(service.worker(), ids) == dict.fromkeys(ids, JobStatus.SUCCEEDED)
    for job_id, spec in zip(ids, specs):
        assert_is_solo_run(service, job_id, spec)


def test_jobs_vmap_cannot_map_run_alone(service, monkeypatch):
    import service.engine.batched as batched

    def no_batching_rule(fn: Any) -> Any:
        def mapped(x: Any) -> Any:
            raise RuntimeError("no batching rule")
        return mapped

    monkeypatch.setattr(batched.torch.func, "vmap", no_batching_rule)
    specs = [{**BASE, "x0": x0} for x0 in STARTS[:3]]
    ids = [service.submit(spec) for spec in specs]
    assert runner.execute_message(service.worker(), ids[:1]) == dict.fromkeys(ids, JobStatus.SUCCEEDED)
    for job_id, spec in zip(ids, specs):
        assert_is_solo_run(service, job_id, spec)
    assert np.isfinite(service.job(ids[0])["result"]["f"])
