"""The worker's job runner (``workers.runner``) on the embedded backend, with real parts."""
from __future__ import annotations

import json
import sqlite3

from service.status import JobStatus
from workers import runner
from workers.state import WorkerState

LONG = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 100_000, "optimizer": {"name": "sgd", "lr": 1e-6}}


def messages_by_queue(broker_db: str) -> dict[str, int]:
    with sqlite3.connect(broker_db) as conn:
        rows = conn.execute("SELECT q.name, count(m.id) FROM kombu_queue q LEFT JOIN kombu_message m "
                            "ON m.queue_id = q.id GROUP BY q.name").fetchall()
    return dict(rows)


def test_a_job_handed_back_on_shutdown_is_resent_to_its_own_queue(app, client):
    """A worker consuming cpu and gpu hands a cpu job back on SIGTERM: the job goes back to cpu."""
    svc = app.extensions["descent"]
    job_id = client.post("/v1/jobs", data=json.dumps({**LONG, "device": "cpu"}), content_type="application/json").get_json()["id"]
    broker_db = str(svc.settings.data_dir / "broker.db")
    assert messages_by_queue(broker_db) == {"cpu": 1, "gpu": 0}

    state = WorkerState(settings=svc.settings, db=svc.db, worker_id="test:1", hostname="test",
                        queues=["cpu", "gpu"], device="gpu", dispatcher=svc.dispatcher)
    state.shutting_down.set()
    assert runner.execute(state, job_id) == "released"

    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == JobStatus.QUEUED and job["queue"] == "cpu" and job["attempts"] == 0
    assert messages_by_queue(broker_db) == {"cpu": 2, "gpu": 0}
