"""Never lose a step when the servers misbehave: the broker flushed or restarted, PostgreSQL
restarted mid-run."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
import requests
from sqlalchemy import func, select

from service.store.models import history_rows
from service.status import JobStatus
from tests.helpers.faults import (
    LONG,
    SHORT,
    assert_history_exact,
    wait_checkpoint,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fault", ["flushall", "restart"])
def test_queued_jobs_survive_a_broker_flush_or_restart(make_service, redis_server, fault):
    service = make_service(workers=0)
    ids = [service.submit({**SHORT, "seed": i})["id"] for i in range(50)]
    if fault == "flushall":
        redis_server.flushall()
    else:
        redis_server.restart()
    service.start_worker()
    service.start_worker()
    jobs = [service.wait(i, timeout=120, poll=0.2) for i in ids]
    assert all(j["status"] == JobStatus.SUCCEEDED and j["attempts"] == 1 for j in jobs)
    for job in jobs[:3]:
        assert_history_exact(service, job, SHORT)
    db = service.db()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(history_rows).where(history_rows.c.job_id.in_(ids))) == 50 * 51
    db.engine.dispose()


def test_broker_restart_while_workers_run(make_service, redis_server):
    service = make_service(workers=2)
    long_id = service.submit(LONG)["id"]
    wait_checkpoint(service, long_id)
    redis_server.restart()
    assert service.job(long_id)["status"] == JobStatus.RUNNING  # the restart came mid-run
    ids = [service.submit({**SHORT, "seed": i})["id"] for i in range(10)]
    assert all(service.wait(i, timeout=120, poll=0.2)["status"] == JobStatus.SUCCEEDED for i in ids)
    job = service.wait(long_id, timeout=120)
    assert job["status"] == JobStatus.SUCCEEDED
    assert_history_exact(service, job, LONG)


def test_postgres_restart_mid_run(make_service, postgres):
    service = make_service(workers=2)
    job_id = service.submit(LONG)["id"]
    wait_checkpoint(service, job_id)
    stopped = datetime.now(timezone.utc)
    postgres.stop()
    try:
        ready = requests.get(service.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("down")
        assert ready.json()["checks"]["broker"] == "ok"
        resp = requests.get(f"{service.url}/v1/jobs/{job_id}", timeout=10)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "database_unavailable"
        time.sleep(1.0)
    finally:
        postgres.start()
    job = service.wait(job_id, timeout=120)
    assert job["status"] == JobStatus.SUCCEEDED, job
    assert datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")) > stopped  # the stop came mid-run
    assert requests.get(service.url + "/readyz", timeout=10).status_code == 200
    assert_history_exact(service, job, LONG)
