"""The reconciler's routing duties on the embedded broker: a gpu job with no GPU worker keeps one
message and fails after its wait, and a GPU worker's restart fails none; a queue never holds more
messages than jobs wait for; consumed messages are deleted; its log lines name their jobs."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from service.api import fleet as fleet_api
from service.queue import purge_consumed, waiting_messages
from service.status import WAITING_FOR_GPU
from service.store import fleet
from service.store.jobs import BACKLOG_PATIENCE
from service.store.models import Job
from service.status import JobStatus
from tests.api.test_jobs import submit
from tests.helpers.lesson import LESSON_LOGLOG
from workers import fleet as worker_fleet
from workers import state as worker_state
from workers.state import WorkerState, _identity


@pytest.fixture
def reconciler(app, monkeypatch):  # type: ignore[no-untyped-def]
    """``reconcile_once`` of a CPU worker of this process, on the app's database and broker."""
    svc = app.extensions["descent"]
    settings = dataclasses.replace(svc.settings, gpu_wait_seconds=3600.0)
    state = WorkerState(settings=settings, db=svc.db, worker_id=_identity(), hostname="test", queues=["cpu"],
                        device="cpu", dispatcher=svc.dispatcher)
    monkeypatch.setattr(worker_state, "_state", state)
    monkeypatch.setitem(fleet_api._gpu_seen, "checked", -1e9)  # no cached answer from another test
    return lambda: worker_fleet.reconcile_once(requeue_after=30)


def age(app, job_id: str, seconds: float) -> None:
    """The job was created and last sent ``seconds`` ago."""
    with app.extensions["descent"].db.session() as s:
        job = s.get(Job, job_id)
        job.created_at -= timedelta(seconds=seconds)
        job.enqueued_at -= timedelta(seconds=seconds)


def gpu_worker(app, alive: bool = True) -> None:
    db = app.extensions["descent"].db
    fleet.heartbeat(db, fleet.Heartbeat("gpu-host:1", "gpu-host", 1, ["gpu"], "gpu", device_name="Fake GPU"))
    if not alive:
        fleet.prune_workers(db, lost_for=-1)


def test_a_gpu_job_with_no_gpu_worker_keeps_one_message_then_fails_after_its_wait(app, client, reconciler):
    celery = app.extensions["descent"].dispatcher.celery
    job = submit(client, {**LESSON_LOGLOG, "device": "gpu"}).get_json()
    job_id = job["id"]
    assert job["waiting"] == WAITING_FOR_GPU and waiting_messages(celery, "gpu") == 1
    age(app, job_id, 120)  # overdue, but its message still waits: not re-sent
    assert reconciler() == [] and waiting_messages(celery, "gpu") == 1
    age(app, job_id, 3600)  # past DESCENT_GPU_WAIT_SECONDS with no GPU worker: failed, saying why
    reconciler()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == JobStatus.FAILED and job["error"].startswith(WAITING_FOR_GPU)
    assert "DESCENT_GPU_WAIT_SECONDS" in job["error"]


def test_a_gpu_job_does_not_fail_while_a_gpu_worker_heartbeats(app, client, reconciler):
    job_id = submit(client, {**LESSON_LOGLOG, "device": "gpu"}).get_json()["id"]
    gpu_worker(app)
    age(app, job_id, 7200)
    reconciler()
    fleet_api._gpu_seen["checked"] = -1e9  # no cached answer from before the GPU worker came
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == JobStatus.QUEUED and job["waiting"] is None


def test_a_lost_message_is_sent_again_once(app, client, reconciler):
    celery = app.extensions["descent"].dispatcher.celery
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]
    with celery.connection_for_write() as conn:
        conn.default_channel.queue_purge("cpu")  # the broker lost it (a restart, FLUSHALL)
    assert waiting_messages(celery, "cpu") == 0
    age(app, job_id, 120)
    assert reconciler() == [job_id] and waiting_messages(celery, "cpu") == 1
    age(app, job_id, 120)
    assert reconciler() == [] and waiting_messages(celery, "cpu") == 1


def test_consumed_messages_are_deleted_from_the_embedded_broker(app, client):
    celery = app.extensions["descent"].dispatcher.celery
    submit(client, LESSON_LOGLOG)
    submit(client, LESSON_LOGLOG)
    with celery.connection_for_write() as conn:
        channel = conn.default_channel
        assert channel.basic_get("cpu", no_ack=True) is not None  # a worker took one
        rows = channel.session.query(channel.message_cls).count()
    assert rows == 2 and purge_consumed(celery) == 1
    with celery.connection_for_write() as conn:
        channel = conn.default_channel
        assert channel.session.query(channel.message_cls).count() == 1
    assert waiting_messages(celery, "cpu") == 1


def test_a_message_lost_behind_a_backlog_is_sent_again_after_the_backlog_patience(app, client, reconciler):
    celery = app.extensions["descent"].dispatcher.celery
    lost = submit(client, LESSON_LOGLOG).get_json()["id"]
    # another batch key (a job of the same key would be claimed with it: one message for both)
    waiting_turn = submit(client, {**LESSON_LOGLOG, "steps": 7}).get_json()["id"]
    with celery.connection_for_write() as conn:
        conn.default_channel.queue_purge("cpu")
    app.extensions["descent"].dispatcher.send(waiting_turn, "cpu")  # only the other's message is gone
    for job_id in (waiting_turn, lost):
        age(app, job_id, 120)
    assert reconciler() == []  # the queue holds a message: most likely a backlog, not a loss
    for job_id in (waiting_turn, lost):
        age(app, job_id, 30 * BACKLOG_PATIENCE)
    # one job lacks a message: one is re-sent, the one unsent longest
    assert reconciler() == [lost] and waiting_messages(celery, "cpu") == 2


def one_job_a_message(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Re-sent jobs each in a message of its own (not in shared batch messages), for counting."""
    state = worker_state._state
    monkeypatch.setattr(state, "settings", dataclasses.replace(state.settings, batch_max=1))


def test_a_backlog_never_holds_more_messages_than_jobs_wait(app, client, reconciler, monkeypatch):
    one_job_a_message(monkeypatch)
    celery = app.extensions["descent"].dispatcher.celery
    ids = [submit(client, LESSON_LOGLOG).get_json()["id"] for _ in range(4)]
    for job_id in ids:
        age(app, job_id, 30 * BACKLOG_PATIENCE + 1)
    assert reconciler() == [] and waiting_messages(celery, "cpu") == 4  # each has its message: none re-sent
    with celery.connection_for_write() as conn:
        conn.default_channel.queue_purge("cpu")  # two messages are lost
    for job_id in ids[2:]:
        app.extensions["descent"].dispatcher.send(job_id, "cpu")
    assert sorted(reconciler()) == sorted(ids[:2]) and waiting_messages(celery, "cpu") == 4
    for job_id in ids:
        age(app, job_id, 30 * BACKLOG_PATIENCE + 1)
    assert reconciler() == [] and waiting_messages(celery, "cpu") == 4


def test_a_gpu_workers_restart_fails_no_gpu_job(app, client, reconciler):
    db = app.extensions["descent"].db
    job_id = submit(client, {**LESSON_LOGLOG, "device": "gpu"}).get_json()["id"]
    gpu_worker(app)
    fleet.stop_worker(db, "gpu-host:1")  # a clean shutdown; the next GPU worker is starting
    age(app, job_id, 7200)
    reconciler()
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == JobStatus.QUEUED and job["waiting"] == WAITING_FOR_GPU  # none is live now
    assert not fleet.live_gpu_worker(db, alive_within=3600)  # device: auto goes to cpu meanwhile


def test_the_reconcilers_lines_name_their_jobs(app, client, reconciler, json_lines, monkeypatch):
    monkeypatch.setattr(worker_fleet, "LOG_IDS_PER_LINE", 2)
    celery = app.extensions["descent"].dispatcher.celery
    lost = [submit(client, LESSON_LOGLOG).get_json()["id"] for _ in range(3)]
    unserved = submit(client, {**LESSON_LOGLOG, "device": "gpu"}).get_json()["id"]
    with celery.connection_for_write() as conn:
        conn.default_channel.queue_purge("cpu")
    for job_id in (*lost, unserved):
        age(app, job_id, 7200)
    assert sorted(reconciler()) == sorted(lost)
    lines = [line for line in json_lines() if line["logger"] == "workers.fleet"]
    failed = [line for line in lines if line["message"].startswith("failed")]
    assert [(line["job_id"], line["level"]) for line in failed] == [(unserved, "warning")]
    re_sent = [line for line in lines if line["message"].startswith("reconciler re-sent")]
    # at most two ids a line, every id on one: a grep for a job's id finds its line
    assert [len(line.get("job_ids") or [line["job_id"]]) for line in re_sent] == [2, 1]
    assert sorted(job_id for line in re_sent for job_id in line.get("job_ids") or [line["job_id"]]) == sorted(lost)
