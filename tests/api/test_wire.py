"""What a hostile client can send on the wire, through the API's real HTTP server (waitress, in
this process): bodies that are JSON but not UTF-8, an object naming a key twice, an absolute-form
request target naming a foreign host, and a body over the size limit. Each is refused with the
API's one error shape, and no job is made."""
from __future__ import annotations

import json
import socket
import threading
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select

from service.api import create_app
from service.cli.serving import make_server
from service.store.models import Job
from testkit.backends import embedded_settings, migrated_database

SPEC = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 5}
LIMIT = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[int, Any]]:  # type: ignore[no-untyped-def]
    """(port, app) of the API served by waitress on a free loopback port (one for the module)."""
    settings = embedded_settings(tmp_path_factory.mktemp("wire"))
    database = migrated_database(settings.database_url)
    app = create_app(settings, db=database)
    app.config["MAX_CONTENT_LENGTH"] = LIMIT
    http = make_server(app, host="127.0.0.1", port=0, threads=2, max_body_bytes=LIMIT)
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    yield http.effective_port, app
    http.close()
    thread.join(10)
    database.engine.dispose()


def exchange(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send one raw request; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, rest


def post(port: int, body: bytes, target: str = "/v1/jobs", host: str = "127.0.0.1") -> tuple[int, dict[str, Any]]:
    status, headers, rest = exchange(port, f"POST {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n", body)
    assert headers["content-type"].startswith("application/json"), rest[:200]
    return status, json.loads(rest)


def jobs(app: Any) -> int:
    with app.extensions["descent"].db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_body_not_in_utf8_is_400(server, encoding):
    port, app = server
    before = jobs(app)
    status, body = post(port, json.dumps(SPEC).encode(encoding))
    assert status == 400 and body["error"]["code"] == "invalid_json" and "UTF-8" in body["error"]["message"]
    assert jobs(app) == before
    assert post(port, json.dumps(SPEC).encode())[0] == 202  # the same spec in UTF-8 is taken
    assert jobs(app) == before + 1


@pytest.mark.parametrize("text, key", [
    ('{"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 5, "steps": 50000000}', "steps"),
    ('{"objective": "x.sum()", "x0": [1], "optimizer": {"name": "sgd", "lr": 0.1, "lr": 10}}', "lr"),
])
def test_a_key_given_twice_is_400_naming_it(server, text, key):
    port, app = server
    before = jobs(app)
    status, body = post(port, text.encode())
    assert status == 400 and body["error"]["code"] == "invalid_json"
    assert body["error"]["field"] == key and repr(key) in body["error"]["message"]
    assert jobs(app) == before


def test_an_absolute_form_target_with_a_foreign_host_is_400(server):
    port, app = server
    before = jobs(app)
    status, body = post(port, json.dumps(SPEC).encode(), target="http://evil.example/v1/jobs")
    assert status == 400 and body["error"]["code"] == "invalid_header" and body["error"]["field"] == "Host"
    status, _, rest = exchange(port, "GET http://evil.example/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "Connection: close\r\n\r\n")
    assert status == 400 and json.loads(rest)["error"]["field"] == "Host"
    assert jobs(app) == before
    # The target's host counts: one this service answers is served.
    status, _, rest = exchange(port, f"GET http://127.0.0.1:{port}/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "Connection: close\r\n\r\n")
    assert status == 200 and len(json.loads(rest)["jobs"]) == before


@pytest.mark.parametrize("size", [LIMIT + 1, 10 * LIMIT])
def test_a_body_over_the_limit_is_the_apis_json_413(server, size):
    port, app = server
    before = jobs(app)
    # Only the head is sent: the refusal comes from Content-Length, before any of the body is read.
    status, headers, rest = exchange(port, f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                           f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n")
    assert headers["content-type"] == "application/json"
    body = json.loads(rest)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert f"{LIMIT:,} bytes" in body["error"]["message"]
    assert jobs(app) == before


def test_a_malformed_request_is_json_too(server):
    port, _ = server
    status, headers, rest = exchange(port, "GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(rest)["error"]["code"] == "invalid_header"
