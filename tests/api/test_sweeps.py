"""``/v1/sweeps`` on SQLite and PostgreSQL: many jobs from one request, each an ordinary job with a
complete spec; validation naming the grid key; the job-count limit; owners; counts and the summary
after running some jobs with the worker's own code; cancel; quotas."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select

from service.api import create_app
from service.config import Quotas
from service.spec import check_spec
from service.store import jobs as job_store
from service.store import tokens
from service.store.models import Job
from testkit.backends import embedded_settings
from tests.api.conftest import RecordingDispatcher

PARABOLA = {"objective": {"name": "parabola", "params": {"scale": 1.0}}, "steps": 40, "record": {"every": 1},
            "optimizer": {"name": "sgd", "lr": 0.1}}
SWEEP = {"base": PARABOLA, "grid": {"optimizer.name": ["sgd", "adam"], "optimizer.lr": [0.1, 0.01]},
         "starts": {"count": 3, "init": "uniform", "low": -2, "high": 2, "seed": 0}, "tolerance": 1e-3,
         "name": "compare", "tags": {"who": "test"}}


class Client:
    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app, self.client, self.token = app, app.test_client(), token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self._headers())

    def post(self, path: str, body: Any = None, **headers: str) -> Any:
        headers = {**self._headers(), **{name.replace("_", "-"): value for name, value in headers.items()}}
        if body is None:
            return self.client.post(path, headers=headers)
        return self.client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)

    def sweep(self, body: dict[str, Any] = SWEEP) -> Any:
        return self.post("/v1/sweeps", body)

    def all_jobs(self, sweep_id: str, limit: int = 5) -> list[dict[str, Any]]:
        return every_page(self, f"/v1/sweeps/{sweep_id}/jobs?limit={limit}", "jobs")


def every_page(client: Any, path: str, key: str) -> list[dict[str, Any]]:
    """The items under ``key`` of every page of ``path``, following ``next_cursor``."""
    out, cursor = [], None
    while True:
        page = client.get(path + (f"&cursor={cursor}" if cursor else "")).get_json()
        out += page[key]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


@pytest.fixture
def client(db, tmp_path):  # type: ignore[no-untyped-def]
    return Client(create_app(embedded_settings(tmp_path, database_url=db.url), {"TESTING": True}, db=db, dispatcher=RecordingDispatcher()))


def run(app: Any, job_id: str, batch_max: int | None = None) -> str:
    """Run a stored job in this process with the worker's own code (as tests/conftest.py run_job),
    with the compatible queued jobs it claims unless ``batch_max`` says otherwise."""
    from workers import runner
    from workers.state import WorkerState

    svc = app.extensions["descent"]
    settings = svc.settings if batch_max is None else replace(svc.settings, batch_max=batch_max)
    state = WorkerState(settings=settings, db=svc.db, worker_id="test:1", hostname="test", queues=["cpu"],
                        device="cpu")
    return runner.execute(state, job_id)


def test_a_sweep_makes_the_grid_product_times_the_starts_each_a_complete_job(client, db):
    resp = client.sweep()
    assert resp.status_code == 202, resp.get_json()
    sweep = resp.get_json()
    assert resp.headers["Location"] == f"/v1/sweeps/{sweep['id']}"
    assert sweep["jobs"] == 12 and sweep["counts"]["queued"] == 12 and sweep["owner"] == "local"
    assert sweep["name"] == "compare" and sweep["tags"] == {"who": "test"} and sweep["tolerance"] == 1e-3
    assert sweep["grid"] == SWEEP["grid"] and sweep["links"]["jobs"] == f"/v1/sweeps/{sweep['id']}/jobs"
    jobs = client.all_jobs(sweep["id"])
    assert len(jobs) == 12 and len({j["id"] for j in jobs}) == 12
    combos = [(j["spec"]["optimizer"]["name"], j["spec"]["optimizer"]["lr"]) for j in jobs]
    assert combos == [(n, lr) for n in ("sgd", "adam") for lr in (0.1, 0.01) for _ in range(3)]
    assert [j["spec"]["x0"] for j in jobs[:3]] == [j["spec"]["x0"] for j in jobs[3:6]]  # start i is one point
    assert len({json.dumps(j["spec"]["x0"]) for j in jobs}) == 3
    for job in jobs:
        assert job["status"] == "queued" and isinstance(job["spec"]["x0"], list)
        assert check_spec(job["spec"]).as_json() == job["spec"]
    for job in jobs[::5]:  # each stored spec is a job spec POST /v1/jobs takes as is
        again = client.post("/v1/jobs", job["spec"])
        assert again.status_code == 202 and again.get_json()["spec"] == job["spec"]
    with db.session() as s:  # one transaction: one created_at, the sweep's id on every job
        rows = s.execute(select(Job.created_at, Job.sweep_id, Job.reserved_values).where(Job.sweep_id == sweep["id"])).all()
    assert len(rows) == 12 and len({r[0] for r in rows}) == 1
    assert all(r[2] == (40 + 2) * (3 + 2) for r in rows)  # each job reserves what its spec may record


def test_a_validation_error_names_the_grid_key_and_stores_nothing(client):
    for grid, field in (({"optimizer.lr": [0.1, -5]}, "grid.optimizer.lr"),
                        ({"optimizer.name": ["adam", "sdg"]}, "grid.optimizer.name"),
                        ({"x0": [[1, 2]]}, "grid.x0"), ({"steps": "many"}, "grid.steps")):
        resp = client.sweep({**SWEEP, "grid": grid})
        assert resp.status_code == 400, resp.get_json()
        assert resp.get_json()["error"]["field"] == field
    for body, field in (({**SWEEP, "base": {**PARABOLA, "steps": -1}}, "base.steps"),
                        ({**SWEEP, "starts": {"count": 2, "low": 3, "high": 1}}, "starts.high"),
                        ({**SWEEP, "starts": [[1, 2], [1]]}, "starts.1"),
                        ({**SWEEP, "base": {**PARABOLA, "optimizer": {"name": "sgd", "lr": float("nan")}},
                          "grid": {"optimizer.lr": [0.1]}}, "base.optimizer.lr"),
                        ([1, 2], None), ({"grid": {}}, "base")):
        resp = client.post("/v1/sweeps", body)
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field, resp.get_json()
    assert client.post("/v1/sweeps", None).status_code in (400, 415)
    assert client.get("/v1/jobs").get_json()["jobs"] == []


def test_a_100001_job_sweep_is_a_413_naming_the_limit_before_anything_is_expanded(client):
    body = {"base": {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500},  # a default-size base
            "grid": {"optimizer.lr": [0.001 * (i + 1) for i in range(7)]}, "starts": {"count": 14_286}}
    start = time.perf_counter()
    resp = client.sweep(body)
    elapsed = time.perf_counter() - start
    assert resp.status_code == 413, resp.get_json()
    assert "DESCENT_MAX_SWEEP_JOBS" in resp.get_json()["error"]["message"] and "100,002" in resp.get_json()["error"]["message"]
    assert elapsed < 1.0
    body["starts"] = {"count": 100_001}
    assert client.sweep({**body, "grid": {}}).status_code == 413
    assert client.get("/v1/jobs").get_json()["jobs"] == []


def test_another_owners_sweep_is_a_404_and_an_admin_sees_it(db, tmp_path):
    app = create_app(embedded_settings(tmp_path, auth="required", database_url=db.url), {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    alice, bob, admin = (Client(app, tokens.create_token(db, owner, owner == "ops")[1]) for owner in ("alice", "bob", "ops"))
    sweep = alice.sweep().get_json()
    assert sweep["owner"] == "alice"
    for path in (f"/v1/sweeps/{sweep['id']}", f"/v1/sweeps/{sweep['id']}/jobs"):
        assert bob.get(path).status_code == 404 and alice.get(path).status_code == 200
        assert admin.get(path).status_code == 200
    assert bob.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 404
    assert alice.get(f"/v1/sweeps/{sweep['id']}").get_json()["counts"]["queued"] == 12
    assert bob.get("/v1/jobs").get_json()["jobs"] == []
    assert len(alice.get("/v1/jobs?limit=100").get_json()["jobs"]) == 12
    assert Client(app).get(f"/v1/sweeps/{sweep['id']}").status_code == 401


@pytest.mark.parametrize("path", ["/v1/sweeps/a%00b", "/v1/sweeps/" + "f" * 300, "/v1/sweeps/%F0%9F%92%A5/jobs",
                                  "/v1/sweeps/00000000-0000-0000-0000-000000000000"])
@pytest.mark.slow
def test_an_id_that_names_no_sweep_is_a_404(client, path):
    assert client.get(path).status_code == 404
    assert client.post(path.removesuffix("/jobs") + "/cancel").status_code == 404


def test_counts_and_summary_after_running_some_jobs(client):
    sweep = client.sweep().get_json()
    jobs = client.all_jobs(sweep["id"])
    for job in (jobs[0], jobs[3]):  # sgd at lr 0.1 and 0.01: each runs its three starts as one batch
        assert run(client.app, job["id"]) == "succeeded"
    body = client.get(f"/v1/sweeps/{sweep['id']}").get_json()
    assert body["counts"] == {"queued": 6, "running": 0, "succeeded": 6, "failed": 0, "cancelled": 0}
    assert body["sort"] == "created" and body["next_cursor"] is None
    summary = body["summary"]
    assert [item["index"] for item in summary] == list(range(12))
    assert [item["id"] for item in summary] == [j["id"] for j in jobs]
    first = summary[0]
    assert first["grid"] == {"optimizer.name": "sgd", "optimizer.lr": 0.1} and first["start"] == 0
    assert summary[5]["grid"] == {"optimizer.name": "sgd", "optimizer.lr": 0.01} and summary[5]["start"] == 2
    for item, job in zip(summary[:6], jobs[:6]):
        result = client.get(f"/v1/jobs/{job['id']}").get_json()["result"]
        assert item["status"] == "succeeded" and item["f"] == result["f"] and item["stop_reason"] == "steps"
        assert item["distance_to_minimum"] == result["distance_to_minimum"]
        history = client.get(f"/v1/jobs/{job['id']}/history?limit=1000").get_json()["rows"]
        reached = [row["step"] for row in history if row["f"] <= 0.0 + 1e-3]
        assert item["steps_to_tolerance"] == (reached[0] if reached else None)
    # sgd at lr 0.1 on sum(x^2) contracts by 0.8 a step: it reaches f <= 1e-3 within 40 steps
    assert all(item["steps_to_tolerance"] is not None for item in summary[:3])
    for item in summary[6:]:
        assert item["status"] == "queued" and item["f"] is None and item["steps_to_tolerance"] is None

    # sort by final f, ascending, unfinished last; paged with a cursor
    seen = every_page(client, f"/v1/sweeps/{sweep['id']}?sort=f&limit=4", "summary")
    finished = [item["f"] for item in seen[:6]]
    assert finished == sorted(finished) and [item["f"] for item in seen[6:]] == [None] * 6
    assert sorted(item["id"] for item in seen) == sorted(j["id"] for j in jobs)
    page = client.get(f"/v1/sweeps/{sweep['id']}?limit=5").get_json()
    assert len(page["summary"]) == 5 and page["next_cursor"]
    rest = client.get(f"/v1/sweeps/{sweep['id']}?limit=100&cursor={page['next_cursor']}").get_json()
    assert [i["index"] for i in rest["summary"]] == list(range(5, 12))
    # a cursor of one sort is not a cursor of another
    assert client.get(f"/v1/sweeps/{sweep['id']}?sort=f&cursor={page['next_cursor']}").status_code == 400


@pytest.mark.parametrize("query, field", [
    ("sort=final", "sort"), ("sort=%00", "sort"), ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=1_0", "limit"),
    ("limit=" + "9" * 5000, "limit"), ("cursor=%00", "cursor"), ("cursor=bm9wZQ==", "cursor"), ("cursor=%F0%9F", "cursor"),
    ("cursor=" + "Y3JlYXRlZDo" + "x" * 20, "cursor"),
])
@pytest.mark.slow
def test_a_bad_query_parameter_is_a_400_naming_it(client, query, field):
    sweep = client.sweep().get_json()
    for path in (f"/v1/sweeps/{sweep['id']}", f"/v1/sweeps/{sweep['id']}/jobs"):
        if field == "sort" and path.endswith("/jobs"):
            continue
        resp = client.get(f"{path}?{query}")
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field, (path, query, resp.get_json())


def test_cancel_cancels_queued_jobs_at_once_and_asks_running_ones_to_stop(client, db):
    sweep = client.sweep().get_json()
    jobs = client.all_jobs(sweep["id"])
    assert run(client.app, jobs[0]["id"], batch_max=1) == "succeeded"
    assert job_store.claim_job(db, jobs[1]["id"], "elsewhere", 30, 3) is not None  # running on another worker
    resp = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert resp.status_code == 202
    assert resp.get_json()["counts"] == {"queued": 0, "running": 1, "succeeded": 1, "failed": 0, "cancelled": 10}
    running = client.get(f"/v1/jobs/{jobs[1]['id']}").get_json()
    assert running["status"] == "running" and running["cancel_requested"] is True
    with db.session() as s:  # cancelled jobs give their reservation back; the finished one keeps what it stored
        reserved = dict(s.execute(select(Job.id, Job.reserved_values).where(Job.sweep_id == sweep["id"])).all())
    assert [reserved[j["id"]] for j in jobs[2:]] == [0] * 10 and reserved[jobs[0]["id"]] == 41 * 5
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 202  # again: nothing left to cancel


def test_a_sweep_is_one_submission_but_n_active_jobs_for_the_quotas(db, tmp_path):
    quotas = Quotas(submissions_per_minute=2, active_jobs=20)
    app = create_app(embedded_settings(tmp_path, auth="required", database_url=db.url, quotas=quotas),
                     {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    alice = Client(app, tokens.create_token(db, "alice", False)[1])
    assert alice.sweep().status_code == 202  # 12 jobs, one submission
    resp = alice.sweep()  # 12 more would make 24 active jobs
    assert resp.status_code == 429 and resp.get_json()["error"]["field"] == "quota.active_jobs"
    assert resp.headers["Retry-After"]
    small = {**SWEEP, "starts": {"count": 2}}  # 8 jobs: 20 active, the second submission this minute
    assert alice.sweep(small).status_code == 202
    resp = alice.sweep({**SWEEP, "grid": {}, "starts": {"count": 1}})
    assert resp.status_code == 429 and resp.get_json()["error"]["field"] == "quota.submissions_per_minute"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.owner == "alice")) == 20
    admin = Client(app, tokens.create_token(db, "ops", True)[1])
    assert admin.sweep().status_code == 202  # admins are exempt


def test_the_openapi_document_lists_the_sweep_operations(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["paths"]["/v1/sweeps"]["post"]["responses"]["413"]
    params = {p["name"]: p for p in doc["paths"]["/v1/sweeps/{sweep_id}"]["get"]["parameters"]}
    assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 1000)
    assert params["sort"]["schema"]["enum"] == ["created", "f"]
    example = doc["paths"]["/v1/sweeps"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for item in example.values():
        assert client.sweep(item["value"]).status_code == 202


def test_descent_sweep_submits_a_file_and_prints_the_sweep(client, tmp_path, monkeypatch, capsys):
    import threading

    from werkzeug.serving import make_server

    from service import cli

    server = make_server("127.0.0.1", 0, client.app, threaded=True)  # the app over real HTTP, in this process
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DESCENT_URL", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.delenv("DESCENT_TOKEN", raising=False)
        path = tmp_path / "sweep.json"
        path.write_text(json.dumps(SWEEP))
        assert cli.main(["sweep", str(path)]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["jobs"] == 12 and printed["counts"]["queued"] == 12
        path.write_text(json.dumps({**SWEEP, "grid": {"optimizer.lr": [-1]}}))
        assert cli.main(["sweep", str(path)]) == 1
        captured = capsys.readouterr()
        assert json.loads(captured.out)["error"]["field"] == "grid.optimizer.lr"
        assert captured.err.startswith("descent sweep: ") and len(captured.err.splitlines()) == 1
    finally:
        server.shutdown()

def test_a_broker_outage_stops_dispatch_at_the_first_failure_and_keeps_the_jobs(client):
    svc = client.app.extensions["descent"]
    tries = []
    svc.dispatcher.send_message = lambda message: tries.append(message) and False
    sending = []
    real = svc.dispatcher.send_all_in_background
    svc.dispatcher.send_all_in_background = lambda jobs: sending.append(real(jobs))
    resp = client.sweep()
    sending[0].join(30)
    assert resp.status_code == 202 and len(tries) == 1
    assert client.get(resp.headers["Location"]).get_json()["counts"]["queued"] == 12


def test_an_idempotency_key_makes_one_sweep_however_often_it_is_sent(client, db):
    first = client.post("/v1/sweeps", SWEEP, Idempotency_Key="sweep-1")
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/sweeps", SWEEP, Idempotency_Key="sweep-1")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"] and again.headers["Location"] == first.headers["Location"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 12  # one sweep's jobs, not two
    other = client.post("/v1/sweeps", {**SWEEP, "name": "another"}, Idempotency_Key="sweep-1")
    assert other.status_code == 409 and first.get_json()["id"] in other.get_json()["error"]["message"]
    assert client.post("/v1/sweeps", SWEEP, Idempotency_Key="").get_json()["error"]["field"] == "Idempotency-Key"
    assert client.post("/v1/sweeps", SWEEP, Idempotency_Key="sweep-2").get_json()["id"] != first.get_json()["id"]


@pytest.fixture
def never_expanded(monkeypatch):  # type: ignore[no-untyped-def]
    """The probe: the sweep's expansion (a pure function) fails the test if it is ever called."""
    import service.api.sweeps as sweeps_api
    import service.spec.sweep as sweep_spec

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the sweep was expanded before it was refused")
    monkeypatch.setattr(sweeps_api, "expand", boom)
    monkeypatch.setattr(sweep_spec, "expand", boom)


def _owner_with(db, tmp_path, quotas: Quotas, active: int):  # type: ignore[no-untyped-def]
    """alice's client on a service with ``quotas``, with ``active`` queued jobs of hers already."""
    app = create_app(embedded_settings(tmp_path, auth="required", database_url=db.url, quotas=quotas),
                     {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    for _ in range(active):
        job_store.create_job(db, check_spec(PARABOLA).as_json(), [2], "cpu", owner="alice", reserved_values=10)
    return Client(app, tokens.create_token(db, "alice", False)[1])


def _peak_of(call):  # type: ignore[no-untyped-def]
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_sweep_over_the_active_jobs_quota_is_refused_before_it_is_expanded(db, tmp_path, never_expanded):
    """The job count is known from the grid's sizes and the starts: a nearly full quota refuses a
    10,000-job sweep with its 429 at once, building nothing."""
    alice = _owner_with(db, tmp_path, Quotas(active_jobs=10_005), active=10)
    body = {"base": PARABOLA, "grid": {"optimizer.lr": [0.0001 * (i + 1) for i in range(5_000)]},
            "starts": {"count": 2}}
    resp, peak = _peak_of(lambda: alice.sweep(body))
    assert resp.status_code == 429, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "quota_exceeded" and error["field"] == "quota.active_jobs"
    assert "DESCENT_QUOTA_ACTIVE_JOBS" in error["message"] and "10,000" in error["message"]
    assert resp.headers["Retry-After"]
    assert peak < 16 * 2**20, f"{peak / 2**20:.1f} MiB"  # the body and its parse; no job built
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 10


def test_a_sweep_over_the_recorded_values_quota_is_refused_before_it_is_expanded(db, tmp_path, never_expanded):
    per_job = check_spec(PARABOLA).recorded_values  # 42 rows of 5 values
    alice = _owner_with(db, tmp_path, Quotas(recorded_values=100 + 1_000 * per_job - 1), active=10)
    body = {"base": PARABOLA, "grid": {"optimizer.lr": [0.01, 0.02]}, "starts": {"count": 500}}
    resp = alice.sweep(body)
    assert resp.status_code == 429, resp.get_json()
    error = resp.get_json()["error"]
    assert error["field"] == "quota.recorded_values" and "DESCENT_QUOTA_RECORDED_VALUES" in error["message"]
    assert f"{1_000 * per_job:,}" in error["message"]  # exact: the grid varies nothing a job records
    # a grid over steps: a lower bound (2 rows of 3 values a job) still refuses what cannot fit
    body = {"base": PARABOLA, "grid": {"steps": [40, 4_000]}, "starts": {"count": 50_000}}
    alice = _owner_with(db, tmp_path / "2", Quotas(active_jobs=200_000, recorded_values=500_000), active=0)
    resp = alice.sweep(body)
    assert resp.status_code == 429 and resp.get_json()["error"]["field"] == "quota.recorded_values"


@pytest.mark.slow
def test_a_grid_of_100000_values_is_refused_at_admission_naming_the_limit(db, tmp_path, never_expanded):
    alice = _owner_with(db, tmp_path, Quotas(active_jobs=20_000), active=5)
    body = {"base": PARABOLA, "grid": {"optimizer.lr": [1e-6 * (i + 1) for i in range(100_000)]}}
    resp, peak = _peak_of(lambda: alice.sweep(body))
    assert resp.status_code == 413, resp.get_json()
    error = resp.get_json()["error"]
    assert error["field"] == "grid" and error["code"] == "limit_exceeded" and "10,000" in error["message"]
    assert peak < 32 * 2**20, f"{peak / 2**20:.1f} MiB"  # the 100,000-value body and its parse
    # a grid product of 10^8 is the job limit's 413, from its sizes
    big = {"base": PARABOLA, "grid": {"optimizer.lr": [0.1] * 100, "steps": list(range(1, 101)),
                                      "seed": list(range(100)), "stop.grad_norm": [0.0] * 100}}
    resp = alice.sweep(big)
    assert resp.status_code == 413 and "DESCENT_MAX_SWEEP_JOBS" in resp.get_json()["error"]["message"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 5


def test_a_sweep_that_just_fits_the_quotas_is_stored(db, tmp_path):
    per_job = check_spec(PARABOLA).recorded_values
    alice = _owner_with(db, tmp_path, Quotas(active_jobs=12 + 3, recorded_values=30 + 12 * per_job), active=3)
    resp = alice.sweep()
    assert resp.status_code == 202, resp.get_json()
    assert alice.sweep({**SWEEP, "starts": {"count": 1}}).status_code == 429
