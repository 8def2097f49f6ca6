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
from service.engine import Chunking
from service.jsonsafe import json_safe
from service.store import JobStatus
from service.store import jobs as job_store
from service.store.history import iter_history
from service.store.models import Job
from testkit.backends import embedded_settings
from tests.engine.test_batched import assert_same
from tests.helpers.engine import run_spec
from workers import pacing, runner
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
        return [row for batch in iter_history(self.db, job_id) for row in batch.as_dicts()]

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


# x[1]'s term keeps the gradient's norm at 1 or more unless x[1] starts at 0: such a lane runs
# until it is cancelled. From x = [1, 0] the norm falls under 1e-3 after a few thousand steps.
ENDLESS = {"objective": "x[0] ** 4 + abs(x[1])", "steps": 1_000_000, "optimizer": {"name": "sgd", "lr": 0.01},
           "stop": {"grad_norm": 1e-3}, "record": {"every": 500}, "device": "cpu"}


def wait_for(predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def in_background(service: Service, job_ids: list[str]) -> tuple[threading.Thread, dict[str, Any]]:
    outcomes: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcomes.update(runner.execute_message(service.worker(), job_ids)))
    thread.start()
    return thread, outcomes


@pytest.mark.slow
def test_a_mixed_batch_diverges_stops_and_is_cancelled_per_job(service):
    starts = {"diverged": [1e12, 0.0], "grad_norm": [1.0, 0.0], "cancelled": [0.5, 1.0]}
    ids = {name: service.submit({**ENDLESS, "x0": x0}) for name, x0 in starts.items()}
    thread, outcomes = in_background(service, [ids["grad_norm"]])
    wait_for(lambda: service.job(ids["grad_norm"])["status"] == JobStatus.SUCCEEDED)
    assert service.job(ids["cancelled"])["status"] == JobStatus.RUNNING  # the batch goes on without it
    assert service.client.post(f"/v1/jobs/{ids['cancelled']}/cancel").status_code == 202
    thread.join(60)
    assert not thread.is_alive()
    assert outcomes == {ids["diverged"]: "succeeded", ids["grad_norm"]: "succeeded", ids["cancelled"]: "cancelled"}
    results = {name: service.job(job_id)["result"] for name, job_id in ids.items()}
    assert results["diverged"]["stop_reason"] == "diverged" and results["diverged"]["steps"] == 0
    assert results["grad_norm"]["stop_reason"] == "grad_norm" and 1_000 < results["grad_norm"]["steps"] < 10_000
    assert results["cancelled"]["stop_reason"] == "cancelled"
    assert results["cancelled"]["steps"] > results["grad_norm"]["steps"]
    for name in ("diverged", "grad_norm"):
        assert_is_solo_run(service, ids[name], {**ENDLESS, "x0": starts[name]})
    # the cancelled one equals a solo run of as many steps (its last row is its stop's)
    stopped_at = results["cancelled"]["steps"]
    solo_rows = run_spec({**ENDLESS, "x0": starts["cancelled"], "steps": stopped_at})[1]
    assert_same(service.rows(ids["cancelled"]), solo_rows, 1e-6)


@pytest.mark.slow
def test_a_lane_whose_lease_is_lost_is_dropped_and_the_rest_go_on(service, db):
    ids = [service.submit({**ENDLESS, "x0": [0.5, float(i + 1)]}) for i in range(3)]
    thread, outcomes = in_background(service, ids[:1])
    wait_for(lambda: len(service.rows(ids[1])) > 2)
    for _ in range(100):  # its lease lapses (as if this worker had stalled) and another worker takes it
        with db.session() as s:
            s.execute(update(Job).where(Job.id == ids[1]).values(lease_expires_at=Job.started_at))
        if job_store.claim_job(db, ids[1], "other:2", 30, 3) is not None:
            break
    rows_when_taken = len(service.rows(ids[1]))
    wait_for(lambda: len(service.rows(ids[0])) > rows_when_taken + 2)  # the batch went on for a while
    for job_id in (ids[0], ids[2]):
        service.client.post(f"/v1/jobs/{job_id}/cancel")
    thread.join(60)
    assert not thread.is_alive()
    assert outcomes == {ids[0]: "cancelled", ids[1]: "lease_lost", ids[2]: "cancelled"}
    job = service.job(ids[1])
    assert job["status"] == JobStatus.RUNNING and job["worker"] == "other:2"
    assert len(service.rows(ids[1])) == rows_when_taken  # nothing of it was written after it was taken


@pytest.fixture
def thousand_row_chunks(monkeypatch):  # type: ignore[no-untyped-def]
    """Chunks of lone jobs and of batches end every 1,000 recorded rows, however fast the machine
    steps (not after a quarter or half of a second): the tests that count chunks or saves."""
    monkeypatch.setattr(pacing, "CHUNKING", Chunking(rows=1_000, seconds=3600))
    monkeypatch.setattr(pacing, "BATCH_CHUNKING", Chunking(rows=1_000, seconds=3600))


@pytest.mark.slow
def test_a_batch_handed_back_at_shutdown_resumes_as_a_batch_and_equals_solo_runs(service, thousand_row_chunks):
    # every row recorded: the first chunk boundary, where the hand-back happens, comes at 1,000
    # steps, long before the last step
    long = {**BASE, "steps": 1_200, "record": {"every": 1, "x": True, "grad": True}}
    specs = [{**long, "x0": x0} for x0 in STARTS[:3]]
    ids = [service.submit(spec) for spec in specs]
    state = service.worker()
    state.shutting_down.set()
    before = service.messages()
    assert runner.execute_message(state, ids[:1]) == dict.fromkeys(ids, "released")
    steps = {job_store.get_job(service.db, i).checkpoint_step for i in ids}
    assert len(steps) == 1 and 0 < steps.pop() <= 1_000
    assert service.messages() == before + [ids]
    assert all(service.job(i)["status"] == JobStatus.QUEUED for i in ids)
    assert runner.execute_message(service.worker(), ids) == dict.fromkeys(ids, JobStatus.SUCCEEDED)
    for job_id, spec in zip(ids, specs):
        assert_is_solo_run(service, job_id, spec)


def test_jobs_vmap_cannot_map_run_alone(service, monkeypatch):
    """The first runs alone at once; the others go back to the queue, each with a message of its
    own, and this worker claims no batch of that key again."""
    import service.engine.batched as batched

    def no_batching_rule(fn: Any) -> Any:
        def mapped(x: Any) -> Any:
            raise RuntimeError("no batching rule")
        return mapped

    monkeypatch.setattr(batched.torch.func, "vmap", no_batching_rule)
    specs = [{**BASE, "x0": x0} for x0 in STARTS[:3]]
    ids = [service.submit(spec) for spec in specs]
    state, before = service.worker(), service.messages()
    assert runner.execute_message(state, ids[:1]) == {ids[0]: JobStatus.SUCCEEDED, ids[1]: "released",
                                                      ids[2]: "released"}
    assert service.messages() == before + [[ids[1]], [ids[2]]]
    assert [service.job(i)["attempts"] for i in ids[1:]] == [0, 0]  # their attempts given back
    assert runner.execute_message(state, ids[1:2]) == {ids[1]: JobStatus.SUCCEEDED}  # alone, not with ids[2]
    assert service.job(ids[2])["status"] == JobStatus.QUEUED
    assert runner.execute(state, ids[2]) == JobStatus.SUCCEEDED
    for job_id, spec in zip(ids, specs):
        assert_is_solo_run(service, job_id, spec)
    assert np.isfinite(service.job(ids[0])["result"]["f"])
