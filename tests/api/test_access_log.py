"""Log lines: one per request (method, path, status, duration, the job), JSON when asked, and the
job id on every line a job causes."""
from __future__ import annotations

import io
import logging

import pytest

from service import logs
from service.config import ConfigError
from tests.api.test_jobs import submit
from tests.helpers.lesson import LESSON_LOGLOG


def test_each_request_is_one_json_line_with_status_duration_and_job(client, json_lines):
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]
    client.get(f"/v1/jobs/{job_id}")
    client.get("/v1/jobs/00000000-0000-0000-0000-000000000000")
    lines = [line for line in json_lines() if line["logger"] == "descent.access"]
    assert [(line["method"], line["status"]) for line in lines] == [("POST", 202), ("GET", 200), ("GET", 404)]
    assert lines[1]["job_id"] == job_id and lines[1]["path"] == f"/v1/jobs/{job_id}"
    assert all(isinstance(line["duration_ms"], float) and line["level"] == "info" for line in lines)
    assert lines[0]["job_id"] == job_id  # the job the submission made


def test_a_sweeps_requests_name_the_sweep(client, json_lines):
    made = client.post("/v1/sweeps", json={"base": LESSON_LOGLOG, "grid": {"optimizer.lr": [0.1, 0.2]}})
    assert made.status_code == 202, made.get_json()
    sweep_id = made.get_json()["id"]
    client.get(f"/v1/sweeps/{sweep_id}")
    lines = [line for line in json_lines() if line["logger"] == "descent.access"]
    assert [line.get("sweep_id") for line in lines] == [sweep_id, sweep_id]


def test_every_line_a_job_request_logs_names_the_job(client, json_lines, monkeypatch):
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]

    def broken(*args, **kwargs):  # an unexpected failure inside the handler, logged with its trace
        raise RuntimeError("boom")

    monkeypatch.setattr("service.api.jobs.job_store.get_job", broken)
    assert client.get(f"/v1/jobs/{job_id}").status_code == 500
    failure = [line for line in json_lines() if line["message"] == "unhandled error"]
    assert len(failure) == 1 and failure[0]["job_id"] == job_id and "boom" in failure[0]["exception"]
    logging.getLogger("after").info("outside")
    assert "job_id" not in json_lines()[-1]  # the request's naming ends with it


def test_lines_inside_a_jobs_work_carry_its_id_and_a_batchs_carry_all(json_lines):
    log = logging.getLogger("workers.test")
    with logs.job_logging(["a"]):
        log.info("one")
    with logs.job_logging(["a", "b"]):
        log.warning("two")
    log.info("none")
    one, two, none = json_lines()
    assert one["job_id"] == "a" and two["job_ids"] == ["a", "b"] and "job_id" not in none and "job_ids" not in none


def test_a_path_cannot_start_a_new_text_line(client):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure("text")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        client.get("/v1/jobs/abc%0Aforged line")
    finally:
        root.handlers[:], root.level = saved
    assert len(buffer.getvalue().splitlines()) == 1 and "\\n" in buffer.getvalue()


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ConfigError, match="DESCENT_LOG_FORMAT"):
        logs.configure("xml")
