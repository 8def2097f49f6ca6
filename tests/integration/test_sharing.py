"""Sharing one service safely, in real processes (API, worker, PostgreSQL + Redis, and the
embedded default): tokens made with ``descent tokens``, owners that cannot see each other's jobs,
and quotas answered 429."""
from __future__ import annotations

from typing import Iterator

import pytest
import requests

from service.config import Quotas
from service.store.migrate import upgrade
from service.status import JobStatus
from testkit.processes import Service
from tests.helpers.lesson import LESSON_LOGLOG
from tests.integration.conftest import make_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def shared(request, tmp_path_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    for svc in make_service(request.param, tmp_path_factory, auth="required",
                            quotas=Quotas(submissions_per_minute=4)):
        svc.start(workers=1)
        yield svc


def as_owner(svc: Service, token: str | None) -> requests.Session:
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_owners_tokens_and_quotas_end_to_end(shared):
    secret = shared.token("alice")
    alice = as_owner(shared, secret)
    bob = as_owner(shared, shared.token("bob"))
    admin = as_owner(shared, shared.token("ops", admin=True))
    nobody = as_owner(shared, None)
    url = shared.url

    assert nobody.get(url + "/v1/jobs", timeout=30).status_code == 401
    assert nobody.get(url + "/healthz", timeout=30).status_code == 200

    job = alice.post(url + "/v1/jobs", json=LESSON_LOGLOG, timeout=30).json()
    done = alice.get(f"{url}/v1/jobs/{job['id']}", params={"wait": 30}, timeout=60).json()
    for _ in range(10):
        if done["status"] in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            break
        done = alice.get(f"{url}/v1/jobs/{job['id']}", params={"wait": 30}, timeout=60).json()
    assert done["status"] == JobStatus.SUCCEEDED and done["owner"] == "alice"
    assert alice.get(f"{url}/v1/jobs/{job['id']}/history", timeout=30).json()["rows"]

    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/history"):
        assert bob.get(url + path, timeout=30).status_code == 404
    assert bob.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=30).status_code == 404
    assert bob.get(url + "/v1/jobs", timeout=30).json()["jobs"] == []
    assert job["id"] in {j["id"] for j in admin.get(url + "/v1/jobs", timeout=30).json()["jobs"]}

    codes = [alice.post(url + "/v1/jobs", json={**LESSON_LOGLOG, "steps": 1}, timeout=30).status_code for _ in range(4)]
    assert codes[:3] == [202, 202, 202] and codes[3] == 429
    refused = alice.post(url + "/v1/jobs", json=LESSON_LOGLOG, timeout=30)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert bob.post(url + "/v1/jobs", json={**LESSON_LOGLOG, "steps": 1}, timeout=30).status_code == 202

    assert "auth required" in (shared.log_dir / "api.log").read_text()
    assert secret not in shared.logs()  # a token is never logged, by the API or the workers


def test_the_embedded_default_says_that_auth_is_off(tmp_path_factory):
    for svc in make_service("embedded", tmp_path_factory):
        upgrade(svc.db())
        svc.start_api()
        assert "auth off: every request acts as the local admin" in (svc.log_dir / "api.log").read_text()
        assert requests.get(svc.url + "/v1/jobs", timeout=30).status_code == 200
