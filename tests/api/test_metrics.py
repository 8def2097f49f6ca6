"""``/metrics``: Prometheus's text format, parsed with prometheus_client's own parser, with
values read from SQL that change as jobs are submitted, run and cancelled; for admins only."""
from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.api import create_app
from service.api.metrics import bp
from service.store import tokens
from service.store.fleet import Heartbeat, heartbeat
from service.status import JobStatus
from testkit.backends import embedded_settings
from tests.helpers.lesson import LESSON_LOGLOG


def wired(app: Any) -> Any:
    """The app with /metrics (until create_app registers it)."""
    if "metrics" not in app.blueprints:
        app.register_blueprint(bp)
    return app


@pytest.fixture
def metrics_client(app):  # type: ignore[no-untyped-def]
    return wired(app).test_client()


def scrape(client: Any, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.get_data(as_text=True)) for s in family.samples}


def submit(client: Any, spec: dict[str, Any]) -> str:
    resp = client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp.get_json()["id"]


def test_a_fresh_service_shows_every_metric_at_zero(metrics_client):
    m = scrape(metrics_client)
    for status in JobStatus:
        assert m[("descent_jobs", (("status", status.value),))] == 0
    assert m[("descent_queue_jobs", (("queue", "cpu"),))] == 0
    assert m[("descent_workers_alive", (("queue", "gpu"),))] == 0
    for status in ("succeeded", "failed", "cancelled"):
        assert m[("descent_jobs_finished_total", (("status", status),))] == 0
    for name in ("descent_steps_total", "descent_history_rows_total", "descent_reclaims_total",
                 "descent_job_seconds_count", "descent_queue_wait_seconds_sum", "descent_batch_jobs_count"):
        assert m[(name, ())] == 0, name
    assert m[("descent_job_seconds_bucket", (("le", "+Inf"),))] == 0


def test_values_change_as_jobs_are_submitted_run_and_cancelled(app, metrics_client, run_job):
    first, second = submit(metrics_client, LESSON_LOGLOG), submit(metrics_client, LESSON_LOGLOG)
    m = scrape(metrics_client)
    assert m[("descent_jobs", (("status", "queued"),))] == 2
    assert m[("descent_queue_jobs", (("queue", "cpu"),))] == 2

    assert metrics_client.post(f"/v1/jobs/{second}/cancel").get_json()["status"] == JobStatus.CANCELLED
    assert run_job(first) == JobStatus.SUCCEEDED
    job = metrics_client.get(f"/v1/jobs/{first}").get_json()
    rows = len(metrics_client.get(f"/v1/jobs/{first}/history?limit=100000").get_json()["rows"])
    m = scrape(metrics_client)
    assert m[("descent_jobs", (("status", "queued"),))] == 0
    assert m[("descent_jobs", (("status", "succeeded"),))] == 1
    assert m[("descent_jobs", (("status", "cancelled"),))] == 1
    assert m[("descent_queue_jobs", (("queue", "cpu"),))] == 0
    assert m[("descent_jobs_finished_total", (("status", "succeeded"),))] == 1
    assert m[("descent_jobs_finished_total", (("status", "cancelled"),))] == 1
    assert m[("descent_steps_total", ())] == job["result"]["steps"] > 0
    assert m[("descent_history_rows_total", ())] == rows > 0
    assert m[("descent_job_seconds_count", ())] == 1  # a job cancelled while queued never ran
    assert m[("descent_queue_wait_seconds_count", ())] == 1
    assert m[("descent_batch_jobs_count", ())] == 1
    assert m[("descent_batch_jobs_bucket", (("le", "1.0"),))] == 1

    # compatible jobs queued together run as one batch of three
    batch = [submit(metrics_client, LESSON_LOGLOG) for _ in range(3)]
    assert scrape(metrics_client)[("descent_queue_jobs", (("queue", "cpu"),))] == 3
    assert run_job(batch[0]) == JobStatus.SUCCEEDED
    m = scrape(metrics_client)
    assert m[("descent_queue_jobs", (("queue", "cpu"),))] == 0
    assert m[("descent_jobs_finished_total", (("status", "succeeded"),))] == 4
    assert m[("descent_steps_total", ())] == 4 * job["result"]["steps"]
    assert m[("descent_history_rows_total", ())] == 4 * rows
    assert m[("descent_job_seconds_count", ())] == 4
    assert m[("descent_job_seconds_sum", ())] > 0
    assert m[("descent_batch_jobs_count", ())] == 2
    assert m[("descent_batch_jobs_bucket", (("le", "4.0"),))] == 2  # cumulative: the 1 and the 3
    assert m[("descent_batch_jobs_sum", ())] == 4


def test_workers_alive_by_the_queues_they_serve(app, metrics_client):
    db = app.extensions["descent"].db
    heartbeat(db, Heartbeat("h:1", "h", 1, ["cpu"], "cpu"))
    heartbeat(db, Heartbeat("h:2", "h", 2, ["cpu", "gpu"], "gpu"))
    m = scrape(metrics_client)
    assert m[("descent_workers_alive", (("queue", "cpu"),))] == 2
    assert m[("descent_workers_alive", (("queue", "gpu"),))] == 1


def test_metrics_are_for_admins(db, tmp_path):
    settings = embedded_settings(tmp_path, auth="required", database_url=db.url)
    client = wired(create_app(settings, {"TESTING": True}, db=db)).test_client()
    assert client.get("/metrics").status_code == 401
    alice = tokens.create_token(db, "alice", False)[1]
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {alice}"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    root = tokens.create_token(db, "root", True)[1]
    assert scrape(client, Authorization=f"Bearer {root}")[("descent_jobs", (("status", "queued"),))] == 0
