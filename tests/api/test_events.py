"""A job's progress and its event stream (``/v1/jobs/<id>/events``), on the embedded backend."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

from tests.api.test_jobs import submit
from service.store import fleet
from service.status import JobStatus

# About a second of steps on this machine: long enough to be seen running, in several chunks.
SLOW = {"objective": "((x - 3) ** 2).sum()", "x0": {"shape": [100, 100], "init": "zeros"}, "steps": 6000,
        "optimizer": {"name": "sgd", "lr": 0.0001}, "record": {"every": 100, "x": False, "grad": False}}


def read_events(resp: Any) -> Iterator[tuple[str, Any]]:
    """(event name, data) for each event of a streamed response; ("comment", text) for comments."""
    text = ""
    for piece in resp.response:
        text += piece.decode() if isinstance(piece, bytes) else piece
        while "\n\n" in text:
            block, text = text.split("\n\n", 1)
            if block.startswith(":"):
                yield "comment", block[1:].strip()
                continue
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            yield fields["event"], json.loads(fields["data"])


def run_in_background(run_job: Any, job_id: str) -> threading.Thread:
    thread = threading.Thread(target=run_job, args=(job_id,), daemon=True)
    thread.start()
    return thread


def test_a_running_job_shows_its_progress_and_a_finished_one_where_it_ended(client, run_job):
    job_id = submit(client, SLOW).get_json()["id"]
    assert client.get(f"/v1/jobs/{job_id}").get_json()["progress"] is None
    thread = run_in_background(run_job, job_id)
    seen = []
    while thread.is_alive():
        job = client.get(f"/v1/jobs/{job_id}").get_json()
        if job["status"] == JobStatus.RUNNING and job["progress"]:
            seen.append(job["progress"])
        time.sleep(0.05)
    assert seen, "no progress was seen while the job ran"
    assert all(p["steps"] == 6000 and 0 <= p["step"] < 6000 for p in seen)
    assert [p["step"] for p in seen] == sorted(p["step"] for p in seen)
    done = client.get(f"/v1/jobs/{job_id}").get_json()
    assert done["status"] == JobStatus.SUCCEEDED
    assert done["progress"]["step"] == done["result"]["steps"] == 6000
    assert done["progress"]["f"] == done["result"]["f"]


def test_the_stream_tells_status_progress_and_end_then_closes(app, client, run_job, monkeypatch):
    from service.api import events
    # the stream reads the job every 50 ms, not every second: a fast machine runs SLOW in under a second
    monkeypatch.setattr(events, "PROGRESS_SECONDS", 0.05)
    # the worker heartbeats: a running job's JSON then asks the fleet whether it was lost, in the stream
    fleet.heartbeat(app.extensions["descent"].db, fleet.Heartbeat("test:1", "test", 1, ["cpu"], "cpu"))
    job_id = submit(client, SLOW).get_json()["id"]
    resp = client.get(f"/v1/jobs/{job_id}/events", buffered=False)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-store"
    stream = read_events(resp)
    events = [next(stream)]  # the job as the stream found it, before any worker ran it
    thread = run_in_background(run_job, job_id)
    events += list(stream)
    thread.join(60)
    names = [name for name, _ in events]
    assert names[0] == "status" and events[0][1]["status"] == JobStatus.QUEUED
    assert ("status", JobStatus.RUNNING) in [(n, d["status"]) for n, d in events if n == "status"]
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps and steps == sorted(steps) and all(0 <= s <= 6000 for s in steps)
    assert names[-1] == "end" and events[-1][1]["status"] == JobStatus.SUCCEEDED
    assert events[-1][1]["result"]["steps"] == 6000
    resp.close()
    assert app.extensions["descent"].waiters.in_use == 0


def test_a_finished_jobs_stream_ends_at_once(client, run_job):
    job_id = submit(client, {**SLOW, "steps": 5}).get_json()["id"]
    run_job(job_id)
    resp = client.get(f"/v1/jobs/{job_id}/events", buffered=False)
    assert [name for name, _ in read_events(resp)] == ["status", "end"]


def test_a_quiet_stream_sends_heartbeats_and_closes_at_its_timeout(client, monkeypatch):
    from service.api import events
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.2)
    job_id = submit(client, SLOW).get_json()["id"]  # queued: no worker runs it
    started = time.monotonic()
    got = list(read_events(client.get(f"/v1/jobs/{job_id}/events?timeout=1.5", buffered=False)))
    assert 1.4 <= time.monotonic() - started < 10
    assert got[0][0] == "status" and ("comment", "heartbeat") in got and "end" not in [n for n, _ in got]


def test_stream_parameters_are_checked_before_the_stream(client):
    job_id = submit(client, SLOW).get_json()["id"]
    for bad in ("0", "3601", "abc"):
        resp = client.get(f"/v1/jobs/{job_id}/events?timeout={bad}")
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "timeout"
    resp = client.get("/v1/jobs/00000000-0000-0000-0000-000000000000/events")
    assert resp.status_code == 404 and resp.is_json


def test_streams_past_the_waiter_limit_are_503_with_retry_after(app, client):
    slots = app.extensions["descent"].waiters
    job_id = submit(client, SLOW).get_json()["id"]
    taken = 0
    while slots.take():
        taken += 1
    try:
        resp = client.get(f"/v1/jobs/{job_id}/events")
        assert resp.status_code == 503 and resp.headers["Retry-After"]
    finally:
        for _ in range(taken):
            slots.give_back()
