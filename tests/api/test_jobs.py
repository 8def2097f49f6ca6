"""The HTTP API on the embedded backend: submit, read, list, history, cancel, errors."""
from __future__ import annotations

import csv
import io
import json
import threading
import time

import pytest
from sqlalchemy import func, select

from service.store.models import Job
from tests.helpers.lesson import LESSON_LOGLOG, LESSON_PARABOLA
from service.status import JobStatus


def job_count(app) -> int:
    with app.extensions["descent"].db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def submit(client, spec, **headers):
    return client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json", headers=headers)


def test_submit_returns_202_location_and_a_queued_job(client, app):
    resp = submit(client, LESSON_LOGLOG)
    assert resp.status_code == 202
    body = resp.get_json()
    assert resp.headers["Location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == JobStatus.QUEUED and body["queue"] == "cpu"
    assert body["spec"]["optimizer"] == {"name": "sgd", "lr": 0.001}
    assert client.get(resp.headers["Location"]).get_json()["id"] == body["id"]
    assert job_count(app) == 1


def test_idempotency_key_returns_the_first_job(client, app):
    a = submit(client, LESSON_LOGLOG, **{"Idempotency-Key": "k1"})
    b = submit(client, LESSON_LOGLOG, **{"Idempotency-Key": "k1"})
    assert a.get_json()["id"] == b.get_json()["id"] and b.headers["Idempotent-Replayed"] == "true"
    c = submit(client, {**LESSON_LOGLOG, "steps": 3}, **{"Idempotency-Key": "k1"})
    assert c.status_code == 409 and "Idempotency-Key" in c.get_json()["error"]["message"]
    assert job_count(app) == 1


def test_run_and_read_history_in_every_format(client, run_job):
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]
    assert run_job(job_id) == JobStatus.SUCCEEDED
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == JobStatus.SUCCEEDED and job["result"]["steps"] == 500
    assert [round(v, 4) for row in job["result"]["x"] for v in row] == [4.9900, 9.9948, 0.9775, 1.9825]

    page = client.get(f"/v1/jobs/{job_id}/history?limit=200").get_json()
    assert len(page["rows"]) == 200 and page["next_start"] == 200
    assert page["rows"][0]["x"] == [[5.0, 10.0], [1.0, 2.0]]
    last = client.get(f"/v1/jobs/{job_id}/history?start=400&limit=200").get_json()
    assert [r["step"] for r in last["rows"]] == list(range(400, 501)) and last["next_start"] is None

    text = client.get(f"/v1/jobs/{job_id}/history?format=csv").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["step", "f", "grad_norm", "lr", "x_0", "x_1", "x_2", "x_3"] and len(rows) == 502
    assert [round(float(v), 4) for v in rows[-1][4:]] == [4.9900, 9.9948, 0.9775, 1.9825]

    nd = client.get(f"/v1/jobs/{job_id}/history?format=ndjson&every=100&fields=f").get_data(as_text=True)
    lines = [json.loads(line) for line in nd.splitlines()]
    assert [r["step"] for r in lines] == [0, 100, 200, 300, 400, 500] and set(lines[0]) == {"step", "f"}


def test_gradient_only_job_reports_gradient_and_graph(client, run_job):
    job_id = submit(client, LESSON_PARABOLA).get_json()["id"]
    run_job(job_id)
    result = client.get(f"/v1/jobs/{job_id}").get_json()["result"]
    assert result["grad"][2] == [180.0, 200.0, 220.0, 240.0]
    assert result["graph"] == ["MulBackward0", "SumBackward0", "PowBackward0", "AccumulateGrad"]


def test_list_filters_and_paginates_in_creation_order(client):
    ids = [submit(client, {**LESSON_LOGLOG, "tags": {"batch": "a" if i % 2 else "b"}}).get_json()["id"] for i in range(5)]
    first = client.get("/v1/jobs?limit=2").get_json()
    second = client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}").get_json()
    third = client.get(f"/v1/jobs?limit=2&cursor={second['next_cursor']}").get_json()
    assert [j["id"] for j in first["jobs"] + second["jobs"] + third["jobs"]] == ids
    assert third["next_cursor"] is None
    tagged = client.get("/v1/jobs?tag=batch:a").get_json()["jobs"]
    assert [j["id"] for j in tagged] == [ids[1], ids[3]]
    assert client.get("/v1/jobs?status=succeeded").get_json()["jobs"] == []


def test_cancel_queued_then_conflict(client, run_job):
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]
    resp = client.post(f"/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 202 and resp.get_json()["status"] == JobStatus.CANCELLED
    assert run_job(job_id) == "skipped"
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.get_json()["error"]["message"]


def test_catalog_endpoints(client):
    objectives = client.get("/v1/objectives").get_json()["objectives"]
    himmelblau = next(o for o in objectives if o["name"] == "himmelblau")
    assert len(himmelblau["minima"]) == 4
    optimizers = client.get("/v1/optimizers").get_json()
    assert {o["name"] for o in optimizers["optimizers"]} >= {"sgd", "adam", "lbfgs"}
    assert "momentum" in next(o for o in optimizers["optimizers"] if o["name"] == "sgd")["arguments"]


@pytest.mark.broker  # /readyz pings the embedded SQL broker
def test_health_ready_and_openapi(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "waiting": 0, "max_waiters": 256}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.") and "/v1/jobs" in doc["paths"]
    assert "objective" in doc["components"]["schemas"]["JobSpec"]["properties"]


def test_catalog_job_reports_distance(client, run_job):
    job_id = submit(client, {"objective": {"name": "booth"}, "steps": 300, "optimizer": {"name": "adam", "lr": 0.1}}).get_json()["id"]
    run_job(job_id)
    result = client.get(f"/v1/jobs/{job_id}").get_json()["result"]
    assert result["distance_to_minimum"] < 0.05


def test_diverged_history_keeps_non_finite_values(client, run_job):
    job_id = submit(client, {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 5000,
                             "optimizer": {"name": "sgd", "lr": 1.0}}).get_json()["id"]
    run_job(job_id)
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["result"]["stop_reason"] == "diverged"
    rows = client.get(f"/v1/jobs/{job_id}/history?limit=100000").get_json()["rows"]
    assert rows[-1]["f"] in ("Infinity", "NaN") and rows[-1]["step"] == job["result"]["steps"]


def test_wait_answers_once_the_job_has_finished(app, client, run_job):
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]
    slots = app.extensions["descent"].waiters

    def run_once_waited_on() -> None:  # the job runs once the request below waits for it
        deadline = time.monotonic() + 20
        while slots.in_use == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        run_job(job_id)

    worker = threading.Thread(target=run_once_waited_on)
    worker.start()
    began = time.monotonic()
    job = client.get(f"/v1/jobs/{job_id}?wait=20").get_json()
    worker.join()
    assert job["status"] == JobStatus.SUCCEEDED and job["result"]["steps"] == 500
    assert time.monotonic() - began < 15  # answered when the job ended, not when the wait ran out


def test_wait_ends_with_the_job_as_it_is_when_time_is_up(client):
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]
    began = time.monotonic()
    assert client.get(f"/v1/jobs/{job_id}?wait=0.3").get_json()["status"] == JobStatus.QUEUED
    assert time.monotonic() - began >= 0.3
    assert client.get("/v1/jobs/no-such-job?wait=1").status_code == 404
