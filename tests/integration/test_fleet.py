"""The fleet with real processes: the workers view, a killed worker shown lost and its job
reclaimed, a gpu job on a (test) GPU worker, a GPU worker's clean restart, and JSON log lines
naming the jobs. (A real GPU worker without CUDA refuses to start:
tests/integration/test_worker_start.py.)"""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from service.queue import make_celery, waiting_messages
from service.status import WAITING_FOR_GPU
from service.store.migrate import upgrade
from service.store.models import Job
from testkit.processes import Service, service_on
from tests.helpers.lesson import LESSON_LOGLOG

pytestmark = pytest.mark.integration

# Runs for many seconds unless cancelled: a job to kill its worker under.
ENDLESS = {"objective": "((x - 3) ** 2).sum()", "x0": [0.0, 0.0], "steps": 1_000_000,
           "optimizer": {"name": "sgd", "lr": 1e-9}, "record": {"every": 1000}}


def consumed_messages(svc: Service) -> int:
    """Messages the embedded SQL broker delivered and still keeps (each reconciler pass purges them)."""
    with closing(sqlite3.connect(svc.settings.broker_url.removeprefix("sqla+sqlite:///"))) as conn:
        return int(conn.execute("SELECT count(*) FROM kombu_message WHERE visible = 0").fetchone()[0])


@pytest.fixture
def fleet(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The embedded service, JSON logs, fast heartbeats and leases, a CPU worker and a test GPU
    worker (DESCENT_GPU_WITHOUT_CUDA: it serves the gpu queue on the CPU)."""
    for svc in service_on("embedded", tmp_path, heartbeat_seconds=0.5, lease_seconds=3.0, requeue_after=2.0,
                          log_format="json", gpu_without_cuda="yes"):
        upgrade(svc.db())
        svc.start_api()
        svc.start_worker("cpu")
        svc.start_worker("gpu")
        svc.wait_for_workers(2)
        yield svc


def workers(svc: Service) -> dict[str, dict]:
    resp = svc.http.get(svc.url + "/v1/workers", timeout=30)
    assert resp.status_code == 200, resp.text
    return {w["pid"]: w for w in resp.json()["workers"]}


def json_lines(path: Path) -> list[dict]:
    lines = []
    for text in path.read_text().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def test_the_workers_view_a_lost_worker_and_its_reclaimed_job(fleet: Service) -> None:
    cpu, gpu = fleet.workers
    shown = workers(fleet)
    assert shown[cpu.pid]["queues"] == ["cpu"] and shown[gpu.pid]["queues"] == ["gpu"]
    assert all(w["state"] == "alive" and w["lost_since"] is None for w in shown.values())
    assert shown[cpu.pid]["versions"]["torch"] and shown[cpu.pid]["device_name"]

    done = fleet.wait(fleet.submit({**LESSON_LOGLOG, "device": "gpu"})["id"])
    assert done["status"] == "succeeded" and done["worker"] == shown[gpu.pid]["id"]
    assert done["result"]["device"] == "cpu" and done["result"]["device_name"]
    fleet.wait_for(lambda: workers(fleet)[gpu.pid]["jobs_done"] == 1, "the GPU worker counts its job")

    job_id = fleet.submit(ENDLESS)["id"]
    fleet.wait_status(job_id, "running")
    fleet.wait_for(lambda: workers(fleet)[cpu.pid]["current_job"] == job_id, "the worker shows its job")
    assert fleet.job(job_id)["worker_lost_at"] is None
    fleet.kill_worker(cpu)
    fleet.wait_for(lambda: fleet.job(job_id)["worker_lost_at"] is not None, "the job says its worker was lost", 30)
    running = fleet.job(job_id)
    assert running["status"] == "running" and running["reclaim_at"]
    fleet.wait_for(lambda: workers(fleet)[cpu.pid]["state"] == "lost", "the killed worker is shown lost", 30)
    lost = workers(fleet)[cpu.pid]
    assert lost["lost_since"] > lost["last_heartbeat"]
    # its lease lapses and the reconciler (in the other worker) puts the job back in the queue
    fleet.wait_for(lambda: fleet.job(job_id)["status"] == "queued", "the job is reclaimed", 60)
    assert workers(fleet)[cpu.pid]["current_job"] is None
    fleet.http.post(f"{fleet.url}/v1/jobs/{job_id}/cancel", timeout=30)

    worker_lines = [line for line in json_lines(fleet.log_dir / "worker1.log") if line.get("job_id")]
    assert any(line["job_id"] == done["id"] for line in worker_lines)
    api_lines = [line for line in json_lines(fleet.log_dir / "api.log") if line.get("logger") == "descent.access"]
    assert any(line.get("job_id") == done["id"] and line["status"] == 200 for line in api_lines)



def test_auto_sends_a_big_x_to_the_gpu_worker_and_the_lesson_to_the_cpu(fleet: Service) -> None:
    cpu, gpu = fleet.workers
    ids = {pid: w["id"] for pid, w in workers(fleet).items()}
    small = fleet.wait(fleet.submit({**LESSON_LOGLOG, "device": "auto"})["id"])
    big = fleet.wait(fleet.submit({"objective": "(x ** 2).sum()", "x0": {"shape": [100_000], "init": "normal"},
                                   "steps": 3, "device": "auto", "record": {"every": 1000}})["id"])
    assert (small["status"], small["queue"], small["worker"]) == ("succeeded", "cpu", ids[cpu.pid])
    assert (big["status"], big["queue"], big["worker"]) == ("succeeded", "gpu", ids[gpu.pid])


def test_a_gpu_job_with_no_gpu_worker_says_why_keeps_one_message_and_fails_after_its_wait(tmp_path: Path) -> None:
    for svc in service_on("embedded", tmp_path, heartbeat_seconds=0.5, requeue_after=1.0, gpu_wait_seconds=4.0):
        svc.start(workers=1)  # a CPU worker only: its reconciler looks after the gpu queue too
        job = svc.submit({**LESSON_LOGLOG, "device": "gpu"})
        assert job["queue"] == "gpu" and job["waiting"] == WAITING_FOR_GPU
        celery = make_celery(svc.settings)
        most = 0
        deadline = time.time() + 60
        while svc.job(job["id"])["status"] == "queued" and time.time() < deadline:
            most = max(most, waiting_messages(celery, "gpu"))
            time.sleep(0.2)
        ended = svc.job(job["id"])
        assert ended["status"] == "failed" and ended["error"].startswith(WAITING_FOR_GPU), ended
        assert most == 1  # re-sent never: its one message waited all along


def test_a_gpu_workers_clean_restart_is_shown_stopped_and_fails_no_waiting_gpu_job(tmp_path: Path) -> None:
    for svc in service_on("embedded", tmp_path, heartbeat_seconds=0.5, requeue_after=1.0, gpu_wait_seconds=20.0,
                          gpu_without_cuda="yes"):
        upgrade(svc.db())
        svc.start_api()
        svc.start_worker("cpu")
        gpu = svc.start_worker("gpu")
        svc.wait_for_workers(2)
        svc.kill_worker(gpu, signal.SIGTERM)  # a clean shutdown: the row stays, marked stopped
        stopped = workers(svc)[gpu.pid]
        assert stopped["state"] == "stopped" and stopped["stopped_at"] and stopped["lost_since"] is None
        job = svc.submit({**LESSON_LOGLOG, "device": "gpu"})
        assert job["waiting"] == WAITING_FOR_GPU  # no live GPU worker in the restart's gap
        db = svc.db()
        with db.session() as s:  # queued longer than DESCENT_GPU_WAIT_SECONDS
            s.get(Job, job["id"]).created_at -= timedelta(hours=1)
        db.engine.dispose()
        # A CPU job's message, once delivered, is purged by the CPU worker's next reconciler pass:
        # so a pass has looked at the gpu job since it was made overdue (a GPU worker was seen just now)
        assert svc.wait(svc.submit(LESSON_LOGLOG)["id"])["status"] == "succeeded"
        svc.wait_for(lambda: consumed_messages(svc) == 0, "a reconciler pass purged the CPU job's message")
        assert svc.job(job["id"])["status"] == "queued"
        svc.start_worker("gpu")  # the restarted worker, under a new id (host:pid)
        assert svc.wait(job["id"])["status"] == "succeeded"
