"""``/metrics`` with real processes: values change as a worker process runs jobs, and two API
processes answer the same numbers, whichever of them took the jobs (every value is read from SQL)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.store.migrate import upgrade
from testkit.processes import Service, service_on
from tests.helpers.lesson import LESSON_LOGLOG, LESSON_PARABOLA

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def two_apis(tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """The embedded service with one worker, and a second API process on the same database and broker."""
    for svc in service_on("embedded", tmp_path):
        upgrade(svc.db())
        svc.start_api()
        svc.start_worker()
        svc.wait_for_workers(1)
        (tmp_path / "second").mkdir()
        other = Service(settings=svc.settings, log_dir=tmp_path / "second")
        try:
            other.start_api()
            yield svc, other
        finally:
            other.stop(grace=0)


def scrape(svc: Service) -> Samples:
    resp = svc.http.get(svc.url + "/metrics", timeout=30)
    assert resp.status_code == 200, resp.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def test_metrics_change_as_jobs_run_and_every_api_process_answers_alike(two_apis: tuple[Service, Service]) -> None:
    svc, other = two_apis
    before = scrape(svc)
    assert before == scrape(other)
    assert before[("descent_workers_alive", (("queue", "cpu"),))] == 1
    assert before[("descent_jobs_finished_total", (("status", "succeeded"),))] == 0

    first = svc.wait(svc.submit(LESSON_LOGLOG)["id"])
    second = svc.wait(other.submit(LESSON_PARABOLA)["id"])  # taken by the other API process
    assert first["status"] == second["status"] == "succeeded"
    rows = len(svc.history(first["id"])) + len(svc.history(second["id"]))

    after = scrape(other)
    assert after == scrape(svc)
    assert after[("descent_jobs", (("status", "succeeded"),))] == 2
    assert after[("descent_queue_jobs", (("queue", "cpu"),))] == 0
    assert after[("descent_jobs_finished_total", (("status", "succeeded"),))] == 2
    assert after[("descent_steps_total", ())] == first["result"]["steps"] + second["result"]["steps"]
    assert after[("descent_history_rows_total", ())] == rows
    assert after[("descent_job_seconds_count", ())] == 2
    assert after[("descent_queue_wait_seconds_count", ())] == 2
    assert after[("descent_batch_jobs_count", ())] == 2


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Service]:
    """The embedded service with two worker processes, each writing its own counter rows."""
    for svc in service_on("embedded", tmp_path):
        upgrade(svc.db())
        svc.start_api()
        svc.start_worker()
        svc.start_worker()
        svc.wait_for_workers(2)
        yield svc


def test_counts_from_two_worker_processes_add_up(two_workers: Service) -> None:
    svc = two_workers
    assert scrape(svc)[("descent_workers_alive", (("queue", "cpu"),))] == 2
    # Distinct learning rates: distinct batch keys, so each job runs alone, about a second each,
    # and the second worker takes a job while the first is busy.
    specs = [{**LESSON_PARABOLA, "steps": 20_000, "record": {"every": 100},
              "optimizer": {"name": "sgd", "lr": 1e-6 * (n + 1)}} for n in range(4)]
    ids = [svc.submit(spec)["id"] for spec in specs]
    jobs = [svc.wait(job_id) for job_id in ids]
    assert all(job["status"] == "succeeded" for job in jobs)
    assert len({job["worker"] for job in jobs}) == 2, [job["worker"] for job in jobs]
    after = scrape(svc)
    assert after[("descent_jobs_finished_total", (("status", "succeeded"),))] == 4
    assert after[("descent_steps_total", ())] == sum(job["result"]["steps"] for job in jobs) == 80_000
    assert after[("descent_history_rows_total", ())] == sum(len(svc.history(job["id"])) for job in jobs)
    assert after[("descent_job_seconds_count", ())] == 4
