"""Never lose a step when workers are killed: kill -9 mid-job, mid-batch, on the embedded default
and on data; a job that keeps killing its workers fails after its attempts."""
from __future__ import annotations

import signal
import time

import pytest

from service.store import jobs as job_store
from service.status import JobStatus
from tests.helpers.faults import (
    LONG,
    assert_history_exact,
    holder,
    kill9_mid_job_and_check,
    wait_checkpoint,
)
from tests.helpers.line_fit import line_fit

pytestmark = pytest.mark.integration


def test_kill9_mid_job_resumes_from_the_checkpoint(make_service):
    kill9_mid_job_and_check(make_service(workers=2))


def test_kill9_mid_job_on_the_embedded_default(make_embedded_service):
    """The SQL broker never re-delivers a message its consumer took: the reconciler of the
    surviving worker requeues the job once its lease lapses."""
    kill9_mid_job_and_check(make_embedded_service(workers=2))


def test_kill9_mid_job_of_data_resumes_on_the_same_data(make_service):
    """A job fitting a line to 100 points: the resumed run reads the stored data again and ends
    as an uninterrupted run on that data would."""
    kill9_mid_job_and_check(make_service(workers=2), line_fit({"name": "sgd", "lr": 0.0005}, 20_000,
                                                              record={"every": 50}))


def test_kill9_mid_batch_resumes_every_job_from_its_own_checkpoint(make_service):
    """A worker killed while it runs four jobs as one batch: no step lost or stored twice, each job
    resumes from its own checkpoint (the four again as one batch) and ends as an uninterrupted
    solo run of it would."""
    service = make_service(workers=2)
    starts = [[-1.2, 1.0], [0.5, -0.3], [1.5, 2.0], [-0.1, 0.7]]
    resp = service.http.post(service.url + "/v1/sweeps", json={"base": LONG, "starts": starts}, timeout=30)
    assert resp.status_code == 202, resp.text
    ids = [j["id"] for j in service.http.get(service.url + resp.json()["links"]["jobs"], timeout=30).json()["jobs"]]
    running = [wait_checkpoint(service, job_id) for job_id in ids]
    assert len({job.worker for job in running}) == 1  # one batch, on one worker
    service.kill_worker(holder(service, running[0]), signal.SIGKILL)
    for job_id, x0 in zip(ids, starts):
        job = service.wait(job_id, timeout=120)
        assert job["status"] == JobStatus.SUCCEEDED and job["attempts"] == 2, job
        assert job["result"]["worker"] != running[0].worker
        assert_history_exact(service, job, {**LONG, "x0": x0})


def test_job_that_keeps_killing_its_workers_fails_after_max_attempts(make_service):
    service = make_service(workers=2, max_attempts=2)
    job_id = service.submit(LONG)["id"]
    killed = set()
    deadline = time.time() + 90
    while time.time() < deadline:
        job = service.job(job_id)
        if job["status"] == JobStatus.FAILED:
            break
        if job["status"] == JobStatus.RUNNING and job["worker"] not in killed:
            killed.add(job["worker"])
            service.kill_worker(holder(service, job_store.get_job(service.db(), job_id)), signal.SIGKILL)
            service.start_worker()
        time.sleep(0.05)
    job = service.job(job_id)
    assert job["status"] == JobStatus.FAILED and len(killed) == 2
    assert "gave up after 2 attempts" in job["error"]
