"""Every JSON response the API gives conforms to the schema ``/openapi.json`` documents for it, and
every documented JSON answer is a pydantic model of ``service.api.schemas`` (the one its handler
builds the body with). Real requests through the ``client`` fixture, real runs through ``run_job``;
the bodies are validated with ``jsonschema`` (formats checked: uuid, date-time) against the
document's own components. The bodies a handler builds as a dict (a page of jobs, a surface) are also
read back by their model in pydantic's strict mode, no key it does not name, and dumped to the very
same JSON."""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import update

from service.api.schemas import RESPONSES, Counts, JobPage, Surface, SweepDetail
from service.api.serialize import job_json
from service.rows import Progress
from service.store import fleet
from service.store import jobs as job_store
from service.store import sweeps as sweep_store
from service.store.models import Worker
from service.status import JobStatus
from tests.helpers.lesson import LESSON_LOGLOG, LESSON_PARABOLA

ROSENBROCK = {"objective": {"name": "rosenbrock"}, "steps": 20, "optimizer": {"name": "adam", "lr": 0.01}}
# Ascent on a bowl with a huge step: f runs off to -inf and the run ends "diverged", non-finite numbers
# and all.
DIVERGING = {"objective": "-(x ** 2).sum()", "x0": [1.0, 2.0], "steps": 200, "optimizer": {"name": "sgd", "lr": 1e6}}
SWEEP = {"base": {"objective": {"name": "booth"}, "steps": 5}, "grid": {"optimizer.lr": [0.001, 0.01]},
         "starts": {"count": 2, "seed": 1}}


@pytest.fixture
def doc(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return client.get("/openapi.json").get_json()


def conforms(doc: dict[str, Any], path: str, method: str, resp) -> Any:  # type: ignore[no-untyped-def]
    """The response's JSON body, after checking it against the schema documented for its status."""
    documented = doc["paths"][path][method]["responses"]
    assert str(resp.status_code) in documented, (method, path, resp.status_code, resp.get_data(as_text=True)[:300])
    schema = documented[str(resp.status_code)]["content"]["application/json"]["schema"]
    body = json.loads(resp.get_data(as_text=True))  # strict JSON: NaN, Infinity are not bare literals
    validator = Draft202012Validator({**schema, "components": doc["components"]}, format_checker=FormatChecker())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == [], (method, path, resp.status_code, errors[:5])
    return body


def post(client, path: str, body: Any):  # type: ignore[no-untyped-def]
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_every_documented_json_answer_is_a_response_model(doc):
    models = {m.__name__ for m in RESPONSES}
    described = set()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or path == "/openapi.json":
                    continue
                assert set(schema) == {"$ref"}, (method, path, status, "an inline schema")
                name = schema["$ref"].rsplit("/", 1)[1]
                assert name in models, (method, path, status, name)
                described.add(name)
    assert described == models
    assert {"ProgressView", "ResultView", "HistoryRowView", "SweepSummaryItem", "Float"} <= set(doc["components"]["schemas"])


def test_the_models_name_every_status_and_sort():
    assert list(Counts.model_fields) == [s.value for s in JobStatus]
    assert SweepDetail.model_fields["sort"].annotation.__args__ == tuple(sweep_store.SORTS)  # type: ignore[union-attr]


def test_job_answers_conform_from_submission_to_history(doc, client, run_job):
    submitted = post(client, "/v1/jobs", LESSON_LOGLOG)
    job = conforms(doc, "/v1/jobs", "post", submitted)
    assert job["status"] == "queued" and job["result"] is None and job["progress"] is None
    assert run_job(job["id"]) == JobStatus.SUCCEEDED
    done = conforms(doc, "/v1/jobs/{job_id}", "get", client.get(f"/v1/jobs/{job['id']}"))
    assert {"x", "f", "grad_norm", "steps", "stop_reason", "graph", "device", "seconds"} <= set(done["result"])
    assert "grad" not in done["result"] and "distance_to_minimum" not in done["result"]  # absent, not null
    assert done["progress"]["step"] == done["progress"]["steps"] == 500
    conforms(doc, "/v1/jobs/{job_id}", "get", client.get(f"/v1/jobs/{job['id']}?wait=1"))
    page = conforms(doc, "/v1/jobs", "get", client.get("/v1/jobs?limit=10&order=desc"))
    assert [j["id"] for j in page["jobs"]] == [job["id"]] and page["next_cursor"] is None
    history = conforms(doc, "/v1/jobs/{job_id}/history", "get", client.get(f"/v1/jobs/{job['id']}/history?limit=100"))
    assert len(history["rows"]) == 100 and history["next_start"] == 100
    few = conforms(doc, "/v1/jobs/{job_id}/history", "get",
                   client.get(f"/v1/jobs/{job['id']}/history?points=3&fields=f"))
    assert [set(r) for r in few["rows"]] == [{"step", "f"}] * 3 and few["next_start"] is None
    conforms(doc, "/v1/jobs/{job_id}/cancel", "post", client.post(f"/v1/jobs/{job['id']}/cancel"))  # 409: finished


def test_a_gradient_job_and_a_cancelled_one_conform(doc, client, run_job):
    job_id = post(client, "/v1/jobs", LESSON_PARABOLA).get_json()["id"]
    assert run_job(job_id) == JobStatus.SUCCEEDED
    job = conforms(doc, "/v1/jobs/{job_id}", "get", client.get(f"/v1/jobs/{job_id}"))
    assert job["result"]["grad"][0] == [20.0, 40.0, 60.0, 80.0]
    queued = post(client, "/v1/jobs", LESSON_LOGLOG).get_json()["id"]
    cancelled = conforms(doc, "/v1/jobs/{job_id}/cancel", "post", client.post(f"/v1/jobs/{queued}/cancel"))
    assert cancelled["status"] == "cancelled"


def test_non_finite_numbers_are_the_documented_strings(doc, client, run_job):
    job_id = post(client, "/v1/jobs", DIVERGING).get_json()["id"]
    assert run_job(job_id) == JobStatus.SUCCEEDED
    job = conforms(doc, "/v1/jobs/{job_id}", "get", client.get(f"/v1/jobs/{job_id}"))
    assert job["result"]["stop_reason"] == "diverged"
    assert "-Infinity" in (job["result"]["f"], job["progress"]["f"]) or "NaN" in (job["result"]["f"],)
    rows = conforms(doc, "/v1/jobs/{job_id}/history", "get", client.get(f"/v1/jobs/{job_id}/history"))["rows"]
    assert any(isinstance(r["f"], str) for r in rows)


def test_a_nan_in_a_stored_result_leaves_as_a_string(app):
    svc = app.extensions["descent"]
    from service.store import jobs as job_store
    from dataclasses import replace

    client = app.test_client()
    job_id = post(client, "/v1/jobs", LESSON_LOGLOG).get_json()["id"]
    record = job_store.get_job(svc.db, job_id)
    finished = replace(record, status=JobStatus.SUCCEEDED, result={
        "x": [[math.nan, 1.0], [2.0, math.inf]], "f": math.nan, "grad_norm": math.inf, "steps": 3,
        "stop_reason": "diverged", "graph": [], "device": "cpu", "seconds": 0.0, "distance_to_minimum": -math.inf,
        "worker": "w"})
    with app.app_context():
        body = job_json(finished)
    assert body["result"]["f"] == "NaN" and body["result"]["grad_norm"] == "Infinity"
    assert body["result"]["distance_to_minimum"] == "-Infinity" and body["result"]["x"] == [["NaN", 1.0], [2.0, "Infinity"]]
    assert body["progress"] == {"step": 3, "steps": 500, "f": "NaN", "grad_norm": "Infinity", "updated_at": None}


def test_surface_conforms(doc, client, run_job):
    job_id = post(client, "/v1/jobs", ROSENBROCK).get_json()["id"]
    assert run_job(job_id) == JobStatus.SUCCEEDED
    surface = conforms(doc, "/v1/jobs/{job_id}/surface", "get", client.get(f"/v1/jobs/{job_id}/surface?n=5"))
    assert surface["coords"] == [0, 1] and len(surface["f"]) == 5
    conforms(doc, "/v1/jobs/{job_id}/surface", "get", client.get(f"/v1/jobs/{job_id}/surface?n=1"))  # a 400


def test_sweep_answers_conform(doc, client, run_job):
    sweep = conforms(doc, "/v1/sweeps", "post", post(client, "/v1/sweeps", SWEEP))
    assert sweep["jobs"] == 4 and sweep["counts"]["queued"] == 4
    jobs = conforms(doc, "/v1/sweeps/{sweep_id}/jobs", "get", client.get(f"/v1/sweeps/{sweep['id']}/jobs?limit=3"))
    assert len(jobs["jobs"]) == 3 and jobs["next_cursor"]
    assert run_job(jobs["jobs"][0]["id"]) == JobStatus.SUCCEEDED  # with the compatible jobs it claims
    for sort in ("created", "f"):
        detail = conforms(doc, "/v1/sweeps/{sweep_id}", "get", client.get(f"/v1/sweeps/{sweep['id']}?sort={sort}"))
        assert detail["counts"]["succeeded"] >= 1 and len(detail["summary"]) == 4
        assert any(isinstance(item["f"], float) for item in detail["summary"])
    cancelled = conforms(doc, "/v1/sweeps/{sweep_id}/cancel", "post", client.post(f"/v1/sweeps/{sweep['id']}/cancel"))
    assert cancelled["counts"]["queued"] == 0


def test_catalogs_and_health_conform(doc, client):
    objectives = conforms(doc, "/v1/objectives", "get", client.get("/v1/objectives"))
    assert {"rosenbrock", "loglog"} <= {o["name"] for o in objectives["objectives"]}
    optimizers = conforms(doc, "/v1/optimizers", "get", client.get("/v1/optimizers"))
    assert optimizers["optimizers"] and optimizers["schedulers"]
    assert conforms(doc, "/healthz", "get", client.get("/healthz"))["status"] == "ok"
    assert conforms(doc, "/readyz", "get", client.get("/readyz"))["status"] == "ready"
    assert conforms(doc, "/v1/workers", "get", client.get("/v1/workers"))["workers"] == []  # none in this test


@pytest.mark.parametrize("method, path, url", [
    ("get", "/v1/jobs/{job_id}", "/v1/jobs/00000000-0000-4000-8000-000000000000"),
    ("get", "/v1/jobs", "/v1/jobs?limit=0"),
    ("get", "/v1/jobs", "/v1/jobs?nope=1"),
    ("get", "/v1/sweeps/{sweep_id}", "/v1/sweeps/00000000-0000-4000-8000-000000000000"),
    ("get", "/v1/jobs/{job_id}/history", "/v1/jobs/00000000-0000-4000-8000-000000000000/history"),
])
def test_errors_conform(doc, client, method, path, url):
    body = conforms(doc, path, method, client.open(url, method=method.upper()))
    assert body["error"]["code"] and body["error"]["message"]


def test_refused_submissions_conform(doc, client):
    for body in ({"objective": "x.sum()"}, {"objective": "import os", "x0": [1.0]}, []):
        resp = post(client, "/v1/jobs", body)
        assert resp.status_code == 400
        conforms(doc, "/v1/jobs", "post", resp)


def strictly(model, resp):  # type: ignore[no-untyped-def]
    """The body read by ``model`` in strict mode (no key it does not name, no type coerced but JSON's
    own: a time as text), and dumped again to the very same JSON: the body is the model's."""
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    text = resp.get_data(as_text=True)
    validated = model.model_validate_json(text, strict=True)
    assert validated.dump() == json.loads(text)
    return validated


def test_a_page_of_jobs_in_every_state_is_a_job_page_strictly(app, client, run_job):
    """The list is built from Job bodies (``service.api.jobs``); the page as a whole is held here to
    JobPage: jobs succeeded (one diverged, non-finite numbers and all), failed, cancelled, running with
    progress (one asked to cancel, one whose worker is lost), queued for a GPU with no GPU worker."""
    db = app.extensions["descent"].db
    done = post(client, "/v1/jobs", {**LESSON_LOGLOG, "name": "done", "tags": {"k": "v"}}).get_json()["id"]
    assert run_job(done) == JobStatus.SUCCEEDED
    diverged = post(client, "/v1/jobs", DIVERGING).get_json()["id"]
    assert run_job(diverged) == JobStatus.SUCCEEDED
    failed, cancelled, running, stopping, lost = (post(client, "/v1/jobs", {**ROSENBROCK, "seed": n}).get_json()["id"]
                                                  for n in range(5))
    for job_id, worker in ((failed, "w:1"), (running, "w:1"), (stopping, "w:1"), (lost, "gone:1")):
        assert job_store.claim_job(db, job_id, worker, 30, 3) is not None
    job_store.finish_job(db, failed, "w:1", "failed", None, "the objective gave NaN at step 3")
    assert client.post(f"/v1/jobs/{cancelled}/cancel").status_code == 202
    job_store.renew_jobs(db, [running, stopping], "w:1", 30, progress={
        running: Progress(step=7, steps=20, f=1.5, grad_norm=float("inf")),
        stopping: Progress(step=3, steps=20, f=float("nan"), grad_norm=0.25)})
    assert client.post(f"/v1/jobs/{stopping}/cancel").status_code == 202
    fleet.heartbeat(db, fleet.Heartbeat("gone:1", "gone", 1, ["cpu"], "cpu", current_job=lost))
    long_ago = datetime.now(UTC) - timedelta(seconds=app.extensions["descent"].settings.worker_lost_seconds + 60)
    with db.session() as s:  # its worker heartbeat long ago: the job shows since when that worker counts as lost
        s.execute(update(Worker).where(Worker.id == "gone:1").values(last_heartbeat=long_ago))
    gpu = post(client, "/v1/jobs", {**ROSENBROCK, "device": "gpu"}).get_json()["id"]

    page = strictly(JobPage, client.get("/v1/jobs?limit=100&order=desc"))
    jobs = {job.id: job for job in page.jobs}
    assert set(jobs) == {done, diverged, failed, cancelled, running, stopping, lost, gpu}
    assert {job.status for job in page.jobs} == set(JobStatus)
    assert jobs[failed].error and jobs[failed].result is None
    assert jobs[running].progress is not None and jobs[running].progress.grad_norm == "Infinity"
    assert jobs[stopping].cancel_requested and jobs[stopping].progress.f == "NaN"
    assert jobs[lost].worker_lost_at is not None and jobs[lost].reclaim_at is not None
    assert jobs[gpu].waiting and jobs[diverged].result.stop_reason == "diverged"
    # and a page that goes on: a cursor, filters
    first = strictly(JobPage, client.get("/v1/jobs?limit=3&order=desc"))
    assert first.next_cursor and len(first.jobs) == 3
    rest = strictly(JobPage, client.get(f"/v1/jobs?limit=100&order=desc&cursor={first.next_cursor}"))
    assert len(rest.jobs) == 5 and rest.next_cursor is None
    assert [j.id for j in strictly(JobPage, client.get("/v1/jobs?status=failed")).jobs] == [failed]


def test_a_surface_is_a_surface_strictly(client, run_job):
    job_id = post(client, "/v1/jobs", ROSENBROCK).get_json()["id"]
    assert run_job(job_id) == JobStatus.SUCCEEDED
    surface = strictly(Surface, client.get(f"/v1/jobs/{job_id}/surface?n=7&x_range=-2,2&y_range=-1,3"))
    assert surface.coords == [0, 1] and len(surface.x) == len(surface.y) == 7 and len(surface.f) == 7
    # f overflows float32 far out: the non-finite values are the documented strings
    wide = strictly(Surface, client.get(f"/v1/jobs/{job_id}/surface?n=5&x_range=-1e12,1e12&y_range=-1e12,1e12"))
    assert any(isinstance(v, str) for row in wide.f for v in row), wide.f
