"""The Python client (service.client) against a running service: an API process and a worker."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from service import client as client_module
from service.client import Client, DescentClientError, DescentUnreachable, JobHandle
from service.client import jobs as jobs_module
from service.client import stream as stream_module
from testkit.processes import Service, free_port
from tests.client.proxy import DroppingProxy
from tests.conftest import shared
from tests.helpers.lesson import LESSON_LOGLOG

pytestmark = pytest.mark.integration

LONG = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 2500, "optimizer": {"name": "sgd", "lr": 0.0001}}
ENDLESS = {**LONG, "steps": 1_000_000, "optimizer": {"name": "sgd", "lr": 1e-9}}


@pytest.fixture(scope="module")
def service(embedded_service: Service) -> Iterator[Service]:
    """The embedded service (API + one CPU worker) this test process shares (tests/conftest.py)."""
    yield from shared(embedded_service)


@pytest.fixture(scope="module")
def client(service: Service) -> Client:
    return Client(service.url, token="")


@pytest.fixture(scope="module")
def long_job(client: Client) -> JobHandle:
    """A finished job of 2,500 steps: 2,501 history rows, over two of the API's JSON pages."""
    job = client.submit(LONG)
    assert job.wait(timeout=120)["status"] == "succeeded"
    return job


def test_submit_wait_and_result(client):
    job = client.submit(LESSON_LOGLOG)
    assert job.json["status"] in ("queued", "running")
    final = job.wait(timeout=120)
    assert final["status"] == "succeeded" and job.status == "succeeded" and job.id == final["id"]
    assert [round(v, 4) for row in job.result["x"] for v in row] == [4.9900, 9.9948, 0.9775, 1.9825]
    assert client.job(job.id).json["result"]["steps"] == 500


def test_wait_draws_a_progress_bar_on_stderr(client, capsys):
    job = client.submit({**LONG, "steps": 300})
    assert job.wait(timeout=120, progress=True)["status"] == "succeeded"
    captured = capsys.readouterr()
    assert captured.out == ""
    last = captured.err.rstrip("\n").split("\r")[-1]
    assert "100%" in last and "300/300" in last and "succeeded" in last and captured.err.endswith("\n")


def test_history_is_every_row_however_many_pages(long_job, monkeypatch):
    rows = long_job.history(as_frame=False)
    assert [r["step"] for r in rows] == list(range(2501)) and set(rows[0]) == {"step", "f", "grad_norm", "lr", "x"}
    assert rows[0]["x"] == [8.0, 8.0] and rows[-1]["x"] == long_job.result["x"]
    monkeypatch.setattr(jobs_module, "JSON_PAGE_ROWS", 700)  # pages that end mid-way, as a long job's do
    assert long_job.history(as_frame=False) == rows
    assert long_job.history(fields=["f"], as_frame=False) == [{"step": r["step"], "f": r["f"]} for r in rows]
    every = long_job.history(every=100, start=150, as_frame=False)
    assert [r["step"] for r in every] == list(range(200, 2501, 100))
    assert len(long_job.history(limit=1234, as_frame=False)) == 1234


def test_history_as_a_frame_when_pandas_is_there(long_job):
    pandas = pytest.importorskip("pandas")
    frame = long_job.history(fields="f,grad_norm")
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 2501
    assert list(frame.columns) == ["step", "f", "grad_norm"]


def test_export_glues_pages_into_the_apis_one_download(long_job, service, monkeypatch):
    whole = service.http.get(f"{service.url}/v1/jobs/{long_job.id}/history", params={"format": "csv"}).content
    assert b"".join(long_job.export("csv")) == whole and whole.count(b"\n") == 2502
    monkeypatch.setattr(stream_module, "MAX_ROWS", 999)
    assert b"".join(long_job.export("csv")) == whole  # one download without a limit
    assert b"".join(long_job.export("csv", limit=2600)) == whole  # pages of 999 rows up to a limit
    ndjson = b"".join(long_job.export("ndjson", every=7))
    assert ndjson.count(b"\n") == len(range(0, 2501, 7)) and ndjson.startswith(b'{"step": 0,')
    assert b"".join(long_job.export("csv", limit=1500)).count(b"\n") == 1501


def test_cancel_a_running_job(client, service):
    job = client.submit(ENDLESS)
    service.wait_status(job.id, "running")
    assert job.cancel()["cancel_requested"] is True
    final = job.wait(timeout=60)
    assert final["status"] == "cancelled" and final["result"]["stop_reason"] == "cancelled"
    with pytest.raises(DescentClientError) as err:
        job.cancel()
    assert err.value.status == 409


def test_a_resubmit_with_the_same_key_is_the_same_job(client):
    key = f"k-{uuid.uuid4()}"
    first = client.submit({**LONG, "steps": 5}, idempotency_key=key)
    again = client.submit({**LONG, "steps": 5}, idempotency_key=key)
    assert first.id == again.id
    assert client.submit({**LONG, "steps": 5}).id != client.submit({**LONG, "steps": 5}).id  # a new key each
    sweep = {"base": {**LONG, "steps": 5}, "grid": {"optimizer.lr": [0.001]}}
    assert client.submit_sweep(sweep, idempotency_key=key).id == client.submit_sweep(sweep, idempotency_key=key).id


def test_api_errors_carry_the_apis_message_status_and_code(client):
    with pytest.raises(DescentClientError) as err:
        client.submit({**LESSON_LOGLOG, "steps": -1})
    assert err.value.status == 400 and err.value.field == "steps" and "steps" in str(err.value)
    with pytest.raises(DescentClientError) as err:
        client.job("no-such-job")
    assert err.value.status == 404 and err.value.code == "not_found"
    with pytest.raises(DescentClientError) as err:
        client.submit("{not json")
    assert err.value.status == 400 and "JSON" in str(err.value)


def test_an_api_that_is_not_there_is_one_line_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(DescentUnreachable) as err:
        Client(url, token="", retry_seconds=1.5).job("x")
    assert url in str(err.value) and "\n" not in str(err.value) and err.value.status is None
    assert err.value.idempotency_key is None and "Idempotency-Key" not in str(err.value)  # a GET has none
    assert 1.5 <= time.monotonic() - began < 10  # retried with backoff for the time given, then gave up
    with pytest.raises(DescentUnreachable):
        Client(url, token="", retries=2).job("x")  # or at most so many times again


def test_jobs_iterates_every_page(client, monkeypatch):
    tag = uuid.uuid4().hex[:12]
    ids = [client.submit({**LONG, "steps": 1, "tags": {"set": tag}}).id for _ in range(5)]
    monkeypatch.setattr(client_module, "JOBS_PAGE", 2)
    listed = list(client.jobs(tag=f"set:{tag}"))
    assert [j.id for j in listed] == ids and all(j.json["tags"] == {"set": tag} for j in listed)
    assert [j.id for j in client.jobs(tag=f"set:{tag}", limit=3)] == ids[:3]
    with pytest.raises(DescentClientError) as err:
        list(client.jobs(status="bogus"))
    assert err.value.field == "status"


def test_the_catalog(client):
    assert "rosenbrock" in {o["name"] for o in client.objectives()}
    assert {"sgd", "adam", "lbfgs"} <= {o["name"] for o in client.optimizers()}


def test_a_sweep_its_jobs_and_summary(client):
    sweep = client.submit_sweep({"base": {**LONG, "steps": 20}, "grid": {"optimizer.lr": [0.001, 0.01]},
                                 "starts": [[1, 1], [2, 2]]})
    final = sweep.wait(timeout=120)
    assert final["counts"]["succeeded"] == 4 and sweep.counts["succeeded"] == 4
    jobs = list(sweep.jobs())
    assert len(jobs) == 4 and all(j.json["status"] == "succeeded" for j in jobs)
    summary = sweep.summary(sort="f", as_frame=False)
    assert len(summary) == 4 and {s["id"] for s in summary} == {j.id for j in jobs}
    grid = sweep.grid(rows="optimizer.lr", stat="median")
    assert grid["rows"] == [0.001, 0.01] and grid["cols"] == [None] and grid["counts"] == [[2], [2]]
    by_lr = {lr: sorted(s["f"] for s in summary if s["grid"]["optimizer.lr"] == lr) for lr in (0.001, 0.01)}
    assert grid["cells"] == [[pytest.approx(sum(by_lr[0.001]) / 2)], [pytest.approx(sum(by_lr[0.01]) / 2)]]
    assert client.sweep(sweep.id).json["jobs"] == 4
    assert sweep.cancel()["counts"]["succeeded"] == 4  # nothing left to cancel


def test_a_sweeps_summary_is_a_data_frame_with_pandas(client):
    pandas = pytest.importorskip("pandas")  # an optional extra: descent[pandas]
    sweep = client.submit_sweep({"base": {**LONG, "steps": 5}, "grid": {"optimizer.lr": [0.001, 0.01]}})
    sweep.wait(timeout=120)
    items, frame = sweep.summary(as_frame=False), sweep.summary()
    assert isinstance(frame, pandas.DataFrame) and list(frame["id"]) == [s["id"] for s in items]
    assert list(frame.columns[:3]) == ["id", "index", "optimizer.lr"] and frame["f"].dtype == float


def test_plot_returns_a_png_or_writes_it(long_job, tmp_path):
    png = long_job.plot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    path = long_job.plot(kind="loss", path=tmp_path / "loss.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_submit_whose_answer_is_lost_is_retried_into_the_same_job(service, client):
    proxy = DroppingProxy(service.port)
    try:
        tag = uuid.uuid4().hex[:12]
        job = Client(proxy.url, token="").submit({**LONG, "steps": 3, "tags": {"lost": tag}})
    finally:
        proxy.close()
    assert proxy.seen == 2  # the first answer was lost; the retry, with the same key, got the same job
    assert [j.id for j in client.jobs(tag=f"lost:{tag}")] == [job.id]


def test_a_cancel_whose_answer_is_lost_is_not_sent_again(service, client):
    job = client.submit(ENDLESS)
    proxy = DroppingProxy(service.port)
    try:
        with pytest.raises(DescentUnreachable):
            JobHandle(Client(proxy.url, token=""), job.id).cancel()
    finally:
        proxy.close()
    assert proxy.seen == 1
    assert job.wait(timeout=60)["status"] == "cancelled"  # the one cancel that was sent did its work
