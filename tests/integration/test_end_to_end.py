"""The lesson over HTTP and through the ``descent`` client commands, with real workers, on
PostgreSQL + Redis and on the embedded default."""
from __future__ import annotations

import pytest

import csv
import io
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from service.store.models import history_rows, Job
from tests.helpers.lesson import LESSON_LOGLOG, LESSON_PARABOLA
from testkit.processes import BIN
from service.engine import StopReason
from service.status import JobStatus


pytestmark = pytest.mark.integration

def r4(values):  # type: ignore[no-untyped-def]
    return [round(v, 4) for row in values for v in (row if isinstance(row, list) else [row])]


def test_lesson_case1_gradient_and_graph(service):
    job = service.wait(service.submit(LESSON_PARABOLA)["id"])
    assert job["status"] == JobStatus.SUCCEEDED, job
    res = job["result"]
    assert res["grad"] == [[20.0 * v for v in row] for row in LESSON_PARABOLA["x0"]]
    assert res["graph"] == ["MulBackward0", "SumBackward0", "PowBackward0", "AccumulateGrad"]
    assert res["steps"] == 0 and res["f"] == 6500.0 and res["device"] == "cpu" and ":" in res["worker"]
    assert len(service.history(job["id"])) == 1


def test_lesson_case2_loglog_gradient(service):
    job = service.wait(service.submit({**LESSON_LOGLOG, "steps": 0})["id"])
    assert r4(job["result"]["grad"]) == [0.0201, 0.0109, 0.0449, 0.0351]


def test_lesson_case3_and_4_500_sgd_steps(service):
    job = service.wait(service.submit(LESSON_LOGLOG)["id"])
    res = job["result"]
    assert job["status"] == JobStatus.SUCCEEDED and res["stop_reason"] == "steps" and res["steps"] == 500
    assert r4(res["x"]) == [4.9900, 9.9948, 0.9775, 1.9825]
    rows = service.history(job["id"])
    assert [r["step"] for r in rows] == list(range(501))
    assert rows[-1]["x"] == res["x"]
    text = service.http.get(f"{service.url}/v1/jobs/{job['id']}/history", params={"format": "csv"}).text
    table = list(csv.reader(io.StringIO(text)))
    assert len(table) == 502 and table[0][:4] == ["step", "f", "grad_norm", "lr"]
    assert r4([float(v) for v in table[-1][4:]]) == [4.9900, 9.9948, 0.9775, 1.9825]


def test_wait_answers_when_the_job_has_finished(service):
    job_id = service.submit(LESSON_LOGLOG)["id"]
    job = service.http.get(f"{service.url}/v1/jobs/{job_id}", params={"wait": 30}, timeout=40).json()
    assert job["status"] == JobStatus.SUCCEEDED and job["result"]["steps"] == 500


def test_lesson_case5_trajectory_for_the_contour_plot(service):
    spec = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}}
    job = service.wait(service.submit(spec)["id"])
    rows = service.history(job["id"], fields="x,f")
    assert len(rows) == 501 and rows[0] == {"step": 0, "x": [8.0, 8.0], "f": 1280.0}
    # x_t = 8 (1 - 0.02)^t exactly as the lesson's recording loop finds it
    assert abs(rows[500]["x"][0] - 8 * 0.98 ** 500) < 1e-4
    assert all(a["f"] > b["f"] for a, b in zip(rows, rows[1:]))


def test_200_concurrent_submissions_each_run_exactly_once(service):
    spec = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 20, "optimizer": {"name": "sgd", "lr": 0.01}}
    # Each its own lr, so each its own batch key: no worker claims the others' jobs with its own.
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda i: service.submit({**spec, "tags": {"i": str(i)},
                                                      "optimizer": {"name": "sgd", "lr": 0.01 + i * 1e-6}})["id"],
                            range(200)))
    assert len(set(ids)) == 200
    jobs = [service.wait(i, timeout=300, poll=0.2) for i in ids]
    assert all(j["status"] == JobStatus.SUCCEEDED for j in jobs)
    assert all(j["attempts"] == 1 for j in jobs)
    assert len({j["result"]["worker"] for j in jobs}) == 2  # both workers took part
    db = service.db()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.id.in_(ids))) == 200
        counts = s.execute(select(history_rows.c.job_id, func.count(), func.min(history_rows.c.step), func.max(history_rows.c.step))
                           .where(history_rows.c.job_id.in_(ids)).group_by(history_rows.c.job_id)).all()
    db.engine.dispose()
    assert len(counts) == 200 and all(c == 21 and lo == 0 and hi == 20 for _, c, lo, hi in counts)


def job_rows(service) -> int:  # type: ignore[no-untyped-def]
    db = service.db()
    with db.session() as s:
        count = s.scalar(select(func.count()).select_from(Job))
    db.engine.dispose()
    return count


def test_bad_request_leaves_nothing_behind(service):
    before = job_rows(service)
    resp = service.http.post(service.url + "/v1/jobs", json={"objective": "x.__class__", "x0": [1], "steps": 1})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "objective"
    assert job_rows(service) == before


def test_cancel_running_job_keeps_history(service):
    spec = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 1_000_000, "record": {"every": 100},
            "optimizer": {"name": "sgd", "lr": 1e-7}}
    job_id = service.submit(spec)["id"]
    service.wait_status(job_id, JobStatus.RUNNING)
    service.wait_for(lambda: len(service.history(job_id, fields="f")) > 1, "the job wrote a history chunk")
    asked = time.time()
    assert service.http.post(f"{service.url}/v1/jobs/{job_id}/cancel").status_code == 202
    job = service.wait(job_id, timeout=10, poll=0.02)
    took = time.time() - asked
    assert job["status"] == JobStatus.CANCELLED and job["result"]["stop_reason"] == StopReason.CANCELLED
    assert took < 1.5, took
    rows = service.history(job_id)
    assert rows[-1]["step"] == job["result"]["steps"] and len(rows) > 1
    assert service.http.post(f"{service.url}/v1/jobs/{job_id}/cancel").status_code == 409


# -- the descent client commands (they find the API through DESCENT_URL) ---------------------
def descent(service, *args: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    env = {**service.env, "DESCENT_URL": service.url}
    return subprocess.run([str(BIN / "descent"), *args], env=env, capture_output=True, text=True, timeout=120)


def test_submit_wait_status_and_history_csv(service, tmp_path):
    spec = tmp_path / "lesson.json"
    spec.write_text(json.dumps(LESSON_LOGLOG))
    submitted = descent(service, "submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]

    waited = descent(service, "wait", job_id, "--json")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    job = json.loads(waited.stdout)
    assert job["status"] == JobStatus.SUCCEEDED and [round(v, 4) for row in job["result"]["x"] for v in row] == [
        4.9900, 9.9948, 0.9775, 1.9825]
    assert json.loads(descent(service, "status", job_id, "--json").stdout)["status"] == JobStatus.SUCCEEDED

    table = descent(service, "history", job_id, "--csv").stdout.splitlines()
    assert table[0].startswith("step,f,grad_norm,lr,x_0") and len(table) == 502
    ndjson = descent(service, "history", job_id, "--ndjson", "--limit", "10")
    assert ndjson.returncode == 0, ndjson.stderr
    assert [json.loads(line)["step"] for line in ndjson.stdout.splitlines()] == list(range(10))


def test_client_errors_exit_non_zero_with_the_api_message(service, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**LESSON_LOGLOG, "steps": -1}))
    out = descent(service, "submit", str(bad))
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["field"] == "steps"
    missing = descent(service, "wait", "no-such-job", "--timeout", "1", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["code"] == "not_found"
