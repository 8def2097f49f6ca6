"""Lookups by text the client controls (job ids, tags, cursors, numbers) on each backend: a clean
4xx for anything that names nothing, never a 500 (PostgreSQL cannot compare text holding a NUL)."""
from __future__ import annotations

import base64
import json

import pytest

from service.api import create_app
from testkit.backends import embedded_settings
from tests.helpers.lesson import LESSON_LOGLOG
from tests.api.conftest import RecordingDispatcher


@pytest.fixture
def client(db, tmp_path):  # type: ignore[no-untyped-def]
    app = create_app(embedded_settings(tmp_path, database_url=db.url), {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    return app.test_client()


def job_id(client) -> str:  # type: ignore[no-untyped-def]
    return client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json").get_json()["id"]


@pytest.mark.parametrize("path", ["/v1/jobs/a%00b", "/v1/jobs/a%00b/history", "/v1/jobs/%F0%9F%92%A5",
                                  "/v1/jobs/" + "a" * 300, "/v1/jobs/..%2F..%2Fetc"])
@pytest.mark.slow
def test_an_id_that_names_no_job_is_a_404(client, path):
    assert client.get(path).status_code == 404
    assert client.post(path.removesuffix("/history") + "/cancel").status_code == 404


@pytest.mark.parametrize("query,field", [
    ("tag=a%00:b", "tag"),
    ("cursor=" + base64.urlsafe_b64encode(b"2026-11-27T22:18:58|a\x00b").decode(), "cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b"2026-11-27T22:18:58|" + b"f" * 37).decode(), "cursor"),
    ("cursor=%00", "cursor"),
    ("limit=1_0", "limit"), ("limit=%D9%A3", "limit"), ("limit=%2B5", "limit"), ("limit=%205", "limit"),
    ("limit=" + "9" * 5000, "limit"),
])
@pytest.mark.slow
def test_a_bad_list_parameter_is_a_400_naming_it(client, query, field):
    job_id(client)
    resp = client.get("/v1/jobs?" + query)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["field"] == field


@pytest.mark.slow
@pytest.mark.parametrize("value", ["%201", "%2B1", "1e2", "nan", "inf", "-0.5", "31", "%D9%A3", "1_0"])
def test_wait_is_a_plain_number_of_seconds(client, value):
    resp = client.get(f"/v1/jobs/{job_id(client)}?wait={value}")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "wait"


def test_plain_numbers_still_work(client):
    jid = job_id(client)
    assert client.get(f"/v1/jobs/{jid}?wait=0.05").status_code == 200
    assert client.get(f"/v1/jobs/{jid}?wait=0").status_code == 200
    assert client.get(f"/v1/jobs/{jid}?wait=1e-05").status_code == 200
    assert client.get(f"/v1/jobs/{jid}?wait=-0.0").status_code == 200
    assert client.get("/v1/jobs?limit=10&tag=k:v").status_code == 200
    assert client.get(f"/v1/jobs/{jid}/history?start=0&limit=5&every=2").status_code == 200


@pytest.mark.parametrize("path", ["/v1/jobs?limt=5", "/v1/jobs/{id}?wiat=1", "/v1/jobs/{id}/history?formt=csv",
                                  "/v1/objectives?x=1", "/healthz?verbose=1"])
@pytest.mark.slow
def test_an_unknown_query_parameter_is_a_400_naming_it(client, path):
    resp = client.get(path.replace("{id}", job_id(client)))
    assert resp.status_code == 400, resp.get_data(as_text=True)
    error = resp.get_json()["error"]
    assert error["code"] == "invalid_parameter" and error["field"] in path and "unknown query parameter" in error["message"]
