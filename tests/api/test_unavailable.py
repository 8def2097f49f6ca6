"""Server faults are clear answers: a read-only database or a locked row is a 503
database_unavailable with Retry-After (never a 500, never a hang), /readyz names what is down and
answers within 2 s, and a broker that never answers delays no submit by more than about a second.
Real PostgreSQL; the black-holed broker is a socket here that accepts and never replies."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from service.api import create_app
from service.config import DatabaseTimeouts
from service.store import Database
from testkit.backends import embedded_settings
from tests.helpers.apps import embedded_client
from tests.helpers.lesson import LESSON_LOGLOG
from tests.store.test_connection_bounds import _plain, read_only


def _submit(client: Any) -> Any:
    return client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json")


@pytest.fixture
def pg_app(pg_db, tmp_path):  # type: ignore[no-untyped-def]
    """The API on the test's own PostgreSQL database (short bounds) and an embedded broker."""
    settings = embedded_settings(tmp_path, database_url=pg_db.url)
    db = Database(pg_db.url, DatabaseTimeouts(statement=30, lock=1, idle_in_transaction=5, tcp=4, pool=1, connect=2))
    app = create_app(settings, {"TESTING": True}, db=db)
    yield app, db
    db.engine.dispose()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose socket completes the handshake (the kernel does) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def black_holed_client(tmp_path: Path, black_hole: int) -> Iterator[Any]:
    """A test client of the API whose broker is the black hole, waited on up to 5 s."""
    with embedded_client(tmp_path, broker_url=f"redis://127.0.0.1:{black_hole}/0", broker_timeout=5.0) as client:
        yield client


def test_a_read_only_database_is_a_503_and_not_ready(pg_app):
    app, db = pg_app
    client = app.test_client()
    job = _submit(client).get_json()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["database"] == "ok"
    with read_only(db):
        refused = _submit(client)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        error = refused.get_json()["error"]
        assert error["code"] == "database_unavailable" and "read-only" in error["message"]
        cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel.status_code == 503 and cancel.get_json()["error"]["code"] == "database_unavailable"
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # reads still answer
        started = time.monotonic()
        ready = client.get("/readyz")
        assert time.monotonic() - started < 2
        body = ready.get_json()
        assert ready.status_code == 503 and body["status"] == "not ready"
        assert body["checks"]["database"].startswith("down:") and "read-only" in body["checks"]["database"]
        assert body["checks"]["broker"] == "ok"
    assert client.get("/readyz").status_code == 200
    assert _submit(client).status_code == 202


@pytest.mark.slow  # waits out a server's timeout or reconnect: seconds
def test_a_cancel_that_meets_a_locked_row_answers_503_within_seconds(pg_app):
    app, db = pg_app
    client = app.test_client()
    job = _submit(client).get_json()
    holder = psycopg.connect(_plain(db.url))  # as a worker frozen inside a write transaction
    try:
        holder.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job["id"],))
        answers: list[tuple[int, str | None, float]] = []

        def cancel() -> None:
            started = time.monotonic()
            answer = app.test_client().post(f"/v1/jobs/{job['id']}/cancel")
            answers.append((answer.status_code, answer.headers.get("Retry-After"), time.monotonic() - started))

        threads = [threading.Thread(target=cancel) for _ in range(12)]  # more than the pool holds
        for t in threads:
            t.start()
        read = client.get(f"/v1/jobs/{job['id']}")  # meanwhile, reads answer
        assert read.status_code in (200, 503)
        for t in threads:
            t.join(15)
        assert len(answers) == 12
        for status, retry_after, seconds in answers:
            assert status == 503 and retry_after and seconds < 5
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # the pool is not used up
        assert client.get("/v1/jobs").status_code == 200
    finally:
        holder.close()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.get_json()["status"] == "cancelled"


@pytest.mark.slow
def test_readyz_answers_within_two_seconds_with_a_black_holed_broker(black_holed_client):
    for _ in range(2):  # the second finds the first's check still under way, and waits on it
        started = time.monotonic()
        ready = black_holed_client.get("/readyz")
        assert time.monotonic() - started < 2
        body = ready.get_json()
        assert ready.status_code == 503 and body["checks"]["database"] == "ok"
        assert body["checks"]["broker"].startswith("down: no answer within")


@pytest.mark.slow
def test_a_submit_never_waits_on_a_black_holed_broker(black_holed_client):
    for _ in range(5):  # more than the sends that may be under way at once
        started = time.monotonic()
        answer = _submit(black_holed_client)
        assert answer.status_code == 202 and time.monotonic() - started < 2.5
        job = black_holed_client.get(answer.headers["Location"]).get_json()
        assert job["status"] == "queued"  # stored: the reconciler sends its message later


def test_readyz_on_a_live_redis_is_ready(tmp_path, redis_url):
    with embedded_client(tmp_path, broker_url=redis_url) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.get_json() == {
            "status": "ready", "checks": {"database": "ok", "broker": "ok"}}
