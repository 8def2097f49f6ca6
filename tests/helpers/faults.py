"""What the fault tests share: the specs they run, an uninterrupted run to compare with, and the
check that a history holds every step once, bit for bit that run's."""
from __future__ import annotations

import functools
import json
import signal
import time
from typing import Any

from sqlalchemy import func, select

from service.engine import run
from service.spec import check_spec
from service.store import jobs as job_store
from service.store.models import history_rows
from service.status import JobStatus
from testkit.processes import Service

# Running for seconds, in about a dozen chunks (0.25 s each): a fault the tests make once it has
# checkpointed lands mid-run, and each test checks that it did (a resumed attempt, a job still
# running after the fault). Every step costs the test twice (the job, then the clean run).
LONG = {"objective": {"name": "rosenbrock"}, "steps": 10_000, "record": {"every": 50},
        "optimizer": {"name": "adam", "lr": 0.001}}
SHORT = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 50, "optimizer": {"name": "sgd", "lr": 0.01}}


def clean_run(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """(rows, result) of an uninterrupted run of ``spec`` in this process; a spec run before is
    not run again (the engine is deterministic: the tests compare with it bit for bit)."""
    return _clean_run(json.dumps(spec, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _clean_run(spec: str) -> tuple[list[dict[str, Any]], Any]:
    chunks: list[Any] = []
    result = run(check_spec(json.loads(spec)), on_chunk=chunks.append)
    return [r for c in chunks for r in c.rows.as_dicts()], result


def expected_steps(spec: dict[str, Any], last: int) -> list[int]:
    every = spec.get("record", {}).get("every", 1)
    steps = list(range(0, last + 1, every))
    return steps if steps[-1] == last else steps + [last]


def assert_history_exact(service: Service, job: dict[str, Any], spec: dict[str, Any]) -> None:
    """Every step once, no gap, and x and f equal to an uninterrupted run's, bit for bit."""
    db = service.db()
    with db.session() as s:
        total, distinct = s.execute(select(func.count(), func.count(func.distinct(history_rows.c.step)))
                                    .where(history_rows.c.job_id == job["id"])).one()
    db.engine.dispose()
    rows = service.history(job["id"])
    assert total == distinct == len(rows)
    assert [r["step"] for r in rows] == expected_steps(spec, job["result"]["steps"])
    clean_rows, clean = clean_run(spec)
    assert job["result"]["x"] == clean.x.tolist() and job["result"]["f"] == clean.f
    flat = [{"step": r["step"], "f": r["f"], "x": [v for v in r["x"]]} for r in rows]
    assert flat == [{"step": r["step"], "f": r["f"], "x": r["x"]} for r in clean_rows]


def wait_checkpoint(service: Service, job_id: str, timeout: float = 30) -> Any:
    db = service.db()
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            job = job_store.get_job(db, job_id)
            if job.checkpoint_step:
                return job
            time.sleep(0.05)
    finally:
        db.engine.dispose()
    raise AssertionError(f"job {job_id} wrote no checkpoint\n{service.logs()}")


def holder(service: Service, job: Any) -> Any:
    pid = int(job.worker.rsplit(":", 1)[1])
    return next(p for p in service.workers if p.pid == pid)


def kill9_mid_job_and_check(service: Service, spec: dict[str, Any] = LONG) -> None:
    job_id = service.submit(spec)["id"]
    running = wait_checkpoint(service, job_id)
    service.kill_worker(holder(service, running), signal.SIGKILL)
    job = service.wait(job_id, timeout=120)
    assert job["status"] == JobStatus.SUCCEEDED and job["attempts"] == 2, job
    assert job["result"]["worker"] != running.worker
    assert_history_exact(service, job, spec)
