"""Waiting clients in real processes (the API under waitress, on PostgreSQL + Redis and embedded):
more waiters than the API once had threads, with health and job reads still answering, and the
bound past which a ?wait answers at once and a stream is refused."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest
import requests

from service.status import JobStatus
from testkit.processes import Service
from tests.helpers.lesson import LESSON_LOGLOG
from tests.integration.conftest import make_service

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "embedded"])
def api_only(request, tmp_path_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A factory of API processes without workers (submitted jobs stay queued until cancelled)."""
    services: list[Iterator[Service]] = []  # held open: closing one stops its service

    def start(**overrides: Any) -> Service:
        services.append(make_service(request.param, tmp_path_factory, **overrides))
        svc = next(services[-1])
        svc.start(workers=0)
        return svc

    yield start
    for service in services:
        service.close()


class Waiters:
    """``count`` clients each in one ``GET /v1/jobs/<id>?wait=30``."""

    def __init__(self, svc: Service, job_id: str, count: int) -> None:
        self.answers: list[tuple[int, dict[str, Any], float]] = []
        began = time.monotonic()

        def wait() -> None:
            resp = requests.get(f"{svc.url}/v1/jobs/{job_id}", params={"wait": 30}, timeout=60)
            self.answers.append((resp.status_code, resp.json(), time.monotonic() - began))

        self.threads = [threading.Thread(target=wait, daemon=True) for _ in range(count)]
        for t in self.threads:
            t.start()

    def pending(self) -> int:
        return sum(t.is_alive() for t in self.threads)

    def join(self) -> None:
        for t in self.threads:
            t.join(60)


def waiting_in_api(svc: Service, count: int) -> None:
    svc.wait_for(lambda: "waiting" in requests.get(svc.url + "/healthz", timeout=10).text
                 and requests.get(svc.url + "/healthz", timeout=10).json()["waiting"] >= count,
                 f"{count} requests are waiting in the API", timeout=30)


def test_health_and_reads_answer_while_more_clients_wait_than_the_api_once_had_threads(api_only):
    svc = api_only()
    job = svc.submit(LESSON_LOGLOG)
    waiters = Waiters(svc, job["id"], 24)  # the API used to have 8 request threads
    waiting_in_api(svc, 24)
    assert requests.get(svc.url + "/healthz", timeout=10).status_code == 200
    assert requests.get(svc.url + "/readyz", timeout=10).status_code == 200
    assert svc.job(job["id"])["status"] == JobStatus.QUEUED
    other = svc.submit(LESSON_LOGLOG)
    assert other["status"] == JobStatus.QUEUED
    assert waiters.pending() == 24  # all of them still waiting while the others were answered
    assert requests.post(f"{svc.url}/v1/jobs/{job['id']}/cancel", timeout=10).status_code == 202
    waiters.join()
    assert len(waiters.answers) == 24
    assert all(code == 200 and body["status"] == JobStatus.CANCELLED for code, body, _ in waiters.answers)


def test_past_the_bound_a_wait_answers_at_once_and_a_stream_is_refused(api_only):
    svc = api_only(max_waiters=3)
    job = svc.submit(LESSON_LOGLOG)
    waiters = Waiters(svc, job["id"], 3)
    waiting_in_api(svc, 3)
    began = time.monotonic()
    now = requests.get(f"{svc.url}/v1/jobs/{job['id']}", params={"wait": 30}, timeout=60)
    assert now.status_code == 200 and now.json()["status"] == JobStatus.QUEUED
    assert "Retry-After" in now.headers and time.monotonic() - began < 20  # it did not wait its 30 s
    stream = requests.get(f"{svc.url}/v1/jobs/{job['id']}/history", params={"format": "csv"}, timeout=60)
    assert stream.status_code == 503 and stream.json()["error"]["code"] == "service_busy"
    assert int(stream.headers["Retry-After"]) >= 1 and "DESCENT_MAX_WAITERS" in stream.json()["error"]["message"]
    assert waiters.pending() == 3
    requests.post(f"{svc.url}/v1/jobs/{job['id']}/cancel", timeout=10)
    waiters.join()
    assert [code for code, _, _ in waiters.answers] == [200, 200, 200]
    after = requests.get(f"{svc.url}/v1/jobs/{job['id']}/history", params={"format": "csv"}, timeout=60)
    assert after.status_code == 200  # the slots came back when the waiters were answered
