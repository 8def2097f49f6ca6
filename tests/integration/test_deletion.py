"""Deleting jobs and the retention clean-up in real processes (API, Celery workers; PostgreSQL +
Redis, and the embedded default): a job deleted while a worker writes its chunks leaves no row
and the worker goes on to the next job; ``descent delete`` and the client's ``delete()``; workers
with a job retention delete finished jobs by themselves, one clean-up at a time."""
from __future__ import annotations

import os
import subprocess
from typing import Iterator

import pytest
from sqlalchemy import func, select

from service.client import Client, DescentClientError
from service.store.models import Job
from service.store.models import history_rows as history_view
from service.status import JobStatus
from testkit.processes import BIN, Service
from tests.helpers.lesson import LESSON_LOGLOG
from tests.integration.conftest import make_service

pytestmark = pytest.mark.integration

ENDLESS = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 1_000_000,
           "optimizer": {"name": "sgd", "lr": 1e-9}, "stop": {"max_seconds": 300}}
RETENTION = {"DESCENT_JOB_RETENTION_SECONDS": "3", "DESCENT_RETENTION_INTERVAL_SECONDS": "1"}


class Retaining(Service):
    """A service whose processes run with a short job retention (testkit passes on only the
    settings it knows)."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **RETENTION}


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def service(request, tmp_path_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    for svc in make_service(request.param, tmp_path_factory):
        svc.start(workers=1)
        yield svc


def history_rows(svc: Service, job_id: str) -> int:
    db = svc.db()
    try:
        with db.session() as s:
            return int(s.scalar(select(func.count()).select_from(history_view).where(history_view.c.job_id == job_id)))
    finally:
        db.engine.dispose()


def test_a_job_deleted_while_its_worker_writes_leaves_no_row_and_the_worker_goes_on(service):
    client = Client(service.url, token="")
    job = client.submit(ENDLESS)
    service.wait_status(job.id, JobStatus.RUNNING)
    service.wait_for(lambda: history_rows(service, job.id) > 1_000, "the worker has written some chunks")
    removed = job.delete()
    assert removed["id"] == job.id and removed["removed"]["jobs"] == 1 and removed["removed"]["history_rows"] > 1_000
    with pytest.raises(DescentClientError) as gone:
        job.refresh()
    assert gone.value.status == 404
    with pytest.raises(DescentClientError) as again:
        job.delete()
    assert again.value.status == 404
    # the worker (the service's only one) dropped the job at its next chunk and ran the next one:
    # it has stopped writing, and nothing it wrote after the delete landed
    nxt = client.submit(LESSON_LOGLOG)
    assert nxt.wait(timeout=120)["status"] == JobStatus.SUCCEEDED
    assert history_rows(service, job.id) == 0
    assert [w["current_job"] for w in client.workers() if w["state"] == "alive"] != [job.id]


def test_descent_delete_and_a_sweeps_delete(service):
    env = {**{k: v for k, v in os.environ.items() if k != "DESCENT_TOKEN"}, "DESCENT_URL": service.url}
    client = Client(service.url, token="")
    job = client.submit(LESSON_LOGLOG)
    job.wait(timeout=120)
    out = subprocess.run([str(BIN / "descent"), "delete", job.id], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"deleted job {job.id}: 501 history rows, 0 data tensors " \
        "no other job of yours reads", out
    out = subprocess.run([str(BIN / "descent"), "delete", job.id], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "404" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
    sweep = client.submit_sweep({"base": {"objective": {"name": "rosenbrock"}, "steps": 20},
                                 "grid": {"optimizer.lr": [0.001, 0.002]}, "starts": {"count": 2, "seed": 1}})
    sweep.wait(timeout=120)
    out = subprocess.run([str(BIN / "descent"), "delete", "--sweep", sweep.id], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith(f"deleted sweep {sweep.id} and its 4 jobs: 84 history rows")
    with pytest.raises(DescentClientError):
        sweep.delete()


@pytest.fixture(scope="module")
def retaining(tmp_path_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    """The embedded service with a short job retention and two workers. (The clean-up's SQL, and
    one at a time, are tested on both backends in tests/store/test_deletion.py.)"""
    for svc in make_service("embedded", tmp_path_factory):
        svc.__class__ = Retaining
        svc.start(workers=2)
        yield svc


def test_workers_delete_finished_jobs_past_the_retention_by_themselves(retaining):
    client = Client(retaining.url, token="")
    done = client.submit(LESSON_LOGLOG)
    assert done.wait(timeout=120)["status"] == JobStatus.SUCCEEDED
    running = client.submit(ENDLESS)
    retaining.wait_status(running.id, JobStatus.RUNNING)

    def gone() -> bool:
        try:
            done.refresh()
        except DescentClientError as exc:
            return exc.status == 404
        return False

    retaining.wait_for(gone, "a worker's clean-up deleted the finished job", timeout=60)
    assert history_rows(retaining, done.id) == 0
    assert client.job(running.id).json["status"] == JobStatus.RUNNING  # a running job is never collected
    running.cancel()
    assert retaining.wait(running.id)["status"] == JobStatus.CANCELLED
    retaining.wait_for(lambda: _absent(retaining, running.id), "the cancelled job went too", timeout=60)
    logs = "".join(p.read_text() for p in retaining.log_dir.glob("worker*.log"))
    assert "retention clean-up: deleted 1 finished job(s)" in logs


def _absent(svc: Service, job_id: str) -> bool:
    db = svc.db()
    try:
        with db.session() as s:
            return s.scalar(select(func.count()).select_from(Job).where(Job.id == job_id)) == 0
    finally:
        db.engine.dispose()
