"""Browser-safe HTTP (service.api.security): Content-Type, Origin, Host, CORS, security headers,
body limits before reading, and the headers HTTP errors keep."""
from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select
from werkzeug.test import EnvironBuilder, run_wsgi_app

from service.api.security import CONTENT_SECURITY_POLICY, is_loopback
from service.config import ConfigError
from service.errors import ErrorCode
from service.store.models import Job
from testkit.backends import embedded_settings, migrated_database
from tests.helpers.lesson import LESSON_LOGLOG
from tests.api.conftest import RecordingDispatcher

SPEC = json.dumps(LESSON_LOGLOG)
DASHBOARD = "https://dash.example.com"


@pytest.fixture
def make_app(tmp_path):  # type: ignore[no-untyped-def]
    """An embedded app with some settings replaced (``host``, ``allowed_hosts``, ``allowed_origins``)."""
    from service.api import create_app

    databases = []

    def make(**overrides):  # type: ignore[no-untyped-def]
        settings = embedded_settings(tmp_path, **overrides)
        database = migrated_database(settings.database_url)
        databases.append(database)
        return create_app(settings, {"TESTING": True}, db=database, dispatcher=RecordingDispatcher())

    yield make
    for database in databases:
        database.engine.dispose()


def job_count(app) -> int:  # type: ignore[no-untyped-def]
    with app.extensions["descent"].db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def error(resp, status: int, code: str, field: str | None):  # type: ignore[no-untyped-def]
    """The response is ``status`` with the usual JSON error body; returns the error."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = json.loads(resp.get_data(as_text=True))
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    err = body["error"]
    assert err["code"] == code and err["field"] == field and len(err["message"]) > 10
    return err


def no_cors(resp) -> bool:  # type: ignore[no-untyped-def]
    return not any(name.lower().startswith("access-control-") for name in resp.headers.keys())


# -- 1. Content-Type ------------------------------------------------------------------------
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", None])
def test_body_that_is_not_declared_json_is_415(client, app, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    # POST /v1/jobs and /v1/sweeps also take multipart/form-data (.npy uploads: tests/api/test_tensors.py)
    path = "/v1/jobs/00000000-0000-4000-8000-000000000000/cancel" if ctype and ctype.startswith("multipart/") else "/v1/jobs"
    resp = client.post(path, data=SPEC.encode(), headers=headers)
    err = error(resp, 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Content-Type")
    assert "application/json" in err["message"]
    assert job_count(app) == 0


def test_json_with_charset_parameter_is_accepted(client):
    resp = client.post("/v1/jobs", data=SPEC, headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 202


def test_cancel_without_body_needs_no_content_type(client):
    resp = client.post("/v1/jobs/nope/cancel")  # no body, no Content-Type
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == ErrorCode.NOT_FOUND
    resp = client.post("/v1/jobs/nope/cancel", headers={"Content-Length": "0", "Content-Type": "text/plain"})
    assert resp.status_code == 404


def test_form_cancel_with_a_body_is_415(client):
    resp = client.post("/v1/jobs/nope/cancel", data={"a": "b"})  # what an HTML form sends
    error(resp, 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Content-Type")


# -- 2. Origin ------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:9999", "https://localhost",
                                    "null", "not an origin", "http://localhost/path"])
def test_foreign_origin_is_403_on_post_and_get(client, app, origin):
    resp = client.post("/v1/jobs", data=SPEC, content_type="application/json", headers={"Origin": origin})
    error(resp, 403, ErrorCode.FORBIDDEN, "Origin")
    error(client.get("/v1/jobs", headers={"Origin": origin}), 403, ErrorCode.FORBIDDEN, "Origin")
    error(client.post("/v1/jobs/nope/cancel", headers={"Origin": origin}), 403, ErrorCode.FORBIDDEN, "Origin")
    assert job_count(app) == 0


def test_own_origin_and_no_origin_are_allowed(client):
    assert client.post("/v1/jobs", data=SPEC, content_type="application/json",
                       headers={"Origin": "http://localhost"}).status_code == 202
    assert client.get("/v1/jobs", headers={"Origin": "http://LOCALHOST:80"}).status_code == 200
    assert client.get("/v1/jobs").status_code == 200
    # the origin follows the Host the client addressed, port included
    resp = client.get("/v1/jobs", base_url="http://127.0.0.1:8000", headers={"Origin": "http://127.0.0.1:8000"})
    assert resp.status_code == 200 and no_cors(resp)
    resp = client.get("/v1/jobs", base_url="http://127.0.0.1:8000", headers={"Origin": "http://127.0.0.1:8001"})
    error(resp, 403, ErrorCode.FORBIDDEN, "Origin")


# -- 4. CORS --------------------------------------------------------------------------------
def test_configured_origin_is_allowed_with_cors_headers(make_app):
    app = make_app(allowed_origins=f"{DASHBOARD}, http://localhost:3000")
    client = app.test_client()
    preflight = client.options("/v1/jobs", headers={
        "Origin": DASHBOARD, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert set(preflight.headers["Access-Control-Allow-Methods"].split(", ")) >= {"GET", "POST"}
    assert set(preflight.headers["Access-Control-Allow-Headers"].split(", ")) == {
        "Authorization", "Content-Type", "Idempotency-Key"}
    assert "Origin" in preflight.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in preflight.headers

    resp = client.post("/v1/jobs", data=SPEC, content_type="application/json", headers={"Origin": DASHBOARD})
    assert resp.status_code == 202 and resp.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    resp = client.get("/v1/jobs/nope", headers={"Origin": "http://localhost:3000"})  # errors too
    assert resp.status_code == 404 and resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"

    # other origins: still refused, and never told they may
    resp = client.options("/v1/jobs", headers={"Origin": "https://evil.example",
                                               "Access-Control-Request-Method": "POST"})
    error(resp, 403, ErrorCode.FORBIDDEN, "Origin")
    assert "Access-Control-Allow-Origin" not in resp.headers
    # same-origin requests need no CORS headers
    resp = client.get("/v1/jobs", headers={"Origin": "http://localhost"})
    assert resp.status_code == 200 and "Access-Control-Allow-Origin" not in resp.headers


def test_no_cors_headers_when_no_origins_are_configured(client):
    for resp in (client.get("/v1/jobs"), client.get("/v1/jobs", headers={"Origin": "http://localhost"}),
                 client.options("/v1/jobs", headers={"Origin": "http://localhost",
                                                      "Access-Control-Request-Method": "POST"}),
                 client.options("/v1/jobs", headers={"Origin": DASHBOARD, "Access-Control-Request-Method": "POST"}),
                 client.get("/v1/jobs/nope")):
        assert no_cors(resp), dict(resp.headers)


def test_bad_allowed_origin_refuses_to_start(make_app):
    for value in ("*", "dash.example.com", "https://dash.example.com/app"):
        with pytest.raises(ConfigError, match="DESCENT_ALLOWED_ORIGINS"):
            make_app(allowed_origins=value)


# -- 3. Host --------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "0.0.0.0:8000",
                                  "10.0.0.5", "bad host!"])
def test_host_not_allowed_is_400(client, app, host):
    resp = client.post("/v1/jobs", data=SPEC, content_type="application/json", headers={"Host": host})
    error(resp, 400, ErrorCode.INVALID_HEADER, "Host")
    error(client.get("/healthz", headers={"Host": host}), 400, ErrorCode.INVALID_HEADER, "Host")
    assert job_count(app) == 0


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1", "127.0.0.1:1234",
                                  "[::1]", "[::1]:8000"])
def test_loopback_names_are_allowed_on_a_loopback_bind(client, host):
    assert client.get("/healthz", headers={"Host": host}).status_code == 200


def test_is_loopback():
    for host in ("localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "LocalHost", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.5", "192.168.1.1", "example.com", "localhost.example.com", "api"):
        assert not is_loopback(host), host


def test_non_loopback_bind_without_allowed_hosts_refuses_to_start(make_app):
    for host in ("0.0.0.0", "::", "10.0.0.5"):
        with pytest.raises(ConfigError, match="DESCENT_ALLOWED_HOSTS") as info:
            make_app(host=host)
        assert "\n" not in str(info.value)
    app = make_app(host="0.0.0.0", allowed_hosts="api, descent.example.com:8443")
    client = app.test_client()
    assert client.get("/healthz", headers={"Host": "api:8000"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "descent.example.com:8443"}).status_code == 200
    for host in ("descent.example.com", "descent.example.com:8000", "localhost"):
        error(client.get("/healthz", headers={"Host": host}), 400, ErrorCode.INVALID_HEADER, "Host")


def test_allowed_hosts_star_allows_any_host(make_app):
    client = make_app(host="0.0.0.0", allowed_hosts="*").test_client()
    assert client.get("/healthz", headers={"Host": "anything.example:1"}).status_code == 200


def test_bad_allowed_hosts_entry_refuses_to_start(make_app):
    with pytest.raises(ConfigError, match="DESCENT_ALLOWED_HOSTS"):
        make_app(allowed_hosts="http://api.example.com/")


# -- 5. Security headers --------------------------------------------------------------------
def test_security_headers_on_success_and_error_responses(client):
    responses = [client.get("/healthz"), client.get("/v1/jobs/nope"), client.get("/v1/nothing"),
                 client.put("/v1/jobs"), client.post("/v1/jobs", data="x", content_type="text/plain"),
                 client.get("/v1/jobs", headers={"Origin": "https://evil.example"}),
                 client.get("/healthz", headers={"Host": "evil.example"})]
    for resp in responses:
        assert resp.headers["X-Content-Type-Options"] == "nosniff", resp.status
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]
        assert resp.headers["Referrer-Policy"] == "no-referrer"


# -- 6. Body limits -------------------------------------------------------------------------
class Unreadable(io.RawIOBase):
    """A request stream that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, b):  # type: ignore[no-untyped-def]
        raise AssertionError("the body was read")


def run_raw(app, environ_changes: dict, drop=("CONTENT_LENGTH",)):  # type: ignore[no-untyped-def]
    """POST /v1/jobs with a hand-made WSGI environ: (status, headers, body)."""
    environ = EnvironBuilder(path="/v1/jobs", method="POST", content_type="application/json").get_environ()
    for key in drop:
        environ.pop(key, None)
    environ.update(environ_changes)
    app_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), headers, b"".join(app_iter)


def test_content_length_over_the_limit_is_413_before_reading(app):
    limit = app.extensions["descent"].settings.limits.max_body_bytes
    assert app.config["MAX_CONTENT_LENGTH"] == limit
    for ctype in ("application/json", "text/plain"):
        status, headers, body = run_raw(app, {"wsgi.input": Unreadable(), "CONTENT_LENGTH": str(limit + 1),
                                              "CONTENT_TYPE": ctype})
        err = json.loads(body)["error"]
        assert status == 413 and err["code"] == ErrorCode.BODY_TOO_LARGE and err["field"] is None
        assert "max_body_bytes" in err["message"] and f"{limit:,}" in err["message"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert job_count(app) == 0


def test_chunked_body_over_the_limit_is_still_bounded(app):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    status, _, body = run_raw(app, {"wsgi.input": io.BytesIO(b"{" + b" " * 5000 + b"}"),
                                    "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    assert status == 413 and json.loads(body)["error"]["code"] == ErrorCode.BODY_TOO_LARGE
    # a chunked body must be JSON too
    status, _, body = run_raw(app, {"wsgi.input": io.BytesIO(b"steps=1"), "wsgi.input_terminated": True,
                                    "HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_TYPE": "text/plain"})
    assert status == 415 and json.loads(body)["error"]["field"] == "Content-Type"
    assert job_count(app) == 0
    # a chunked body within the limit reaches the handler whole
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    status, _, body = run_raw(app, {"wsgi.input": io.BytesIO(SPEC.encode() + b" " * 5000),
                                    "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    assert status == 202, body


# -- 7. HTTP errors keep their headers ------------------------------------------------------
def test_405_has_allow_and_a_json_body(client):
    resp = client.delete("/v1/jobs")
    err = error(resp, 405, "method_not_allowed", None)
    assert {"GET", "POST"} <= {m.strip() for m in resp.headers["Allow"].split(",")}
    assert "html" not in err["message"].lower()
    resp = client.get("/v1/jobs/nope/cancel")
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"]
