"""Fixtures shared by every test: databases on each backend (SQLite file, a fresh PostgreSQL
database), the API app and client, running a stored job with the worker's own code, and the
embedded service in real processes that the client, CLI, generated-client and browser tests share."""
from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from testkit.backends import (PostgresUnreachable, embedded_settings, migrated, migrated_database, pg_database,
                              redis_url_for_test)
from tests.helpers.lesson import LESSON_LOGLOG, LESSON_PARABOLA


# Each test module's seconds (setup, call and teardown of its tests) in the last run that ran it,
# kept in the pytest cache: ``make test`` hands whole modules to its two processes, longest first.
MODULE_SECONDS = "descent/module_seconds"
_module_seconds: dict[str, float] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the modules longest first (as they last took; a module not seen yet counts as long
    if it is marked integration), keeping each module's tests in their order: given out in that
    order (``--dist loadfile --no-loadscope-reorder``), no long module is left to run alone at the end."""
    cache = getattr(config, "cache", None)
    known: dict[str, float] = cache.get(MODULE_SECONDS, {}) if cache is not None else {}
    first: dict[str, int] = {}
    weight: dict[str, float] = {}
    for index, item in enumerate(items):
        module = item.nodeid.split("::", 1)[0]
        first.setdefault(module, index)
        guess = 30.0 if item.get_closest_marker("integration") else 1.0
        weight[module] = known.get(module, max(weight.get(module, 0.0), guess))
    items.sort(key=lambda item: (-weight[item.nodeid.split("::", 1)[0]], first[item.nodeid.split("::", 1)[0]]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _module_seconds[module] = _module_seconds.get(module, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The process that saw every report (the only one, or pytest-xdist's controller) keeps the
    modules' seconds for the next run's order."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _module_seconds:
        return
    cache.set(MODULE_SECONDS, {**cache.get(MODULE_SECONDS, {}), **{m: round(t, 2) for m, t in _module_seconds.items()}})


@pytest.fixture
def lesson_loglog() -> dict[str, Any]:
    return dict(LESSON_LOGLOG)


@pytest.fixture
def lesson_parabola() -> dict[str, Any]:
    return dict(LESSON_PARABOLA)


def _or_skip(databases: Iterator[Any]) -> Iterator[Any]:
    """Skip a test whose PostgreSQL is unreachable, with the reason; under CI (``CI=true``) fail it."""
    try:
        first = next(databases)
    except PostgresUnreachable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}; under CI=true it is required")
        pytest.skip(str(exc))
    try:
        yield first
    finally:
        databases.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    yield from _or_skip(pg_database())


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):  # type: ignore[no-untyped-def]
    """A migrated, empty database on each backend."""
    yield from _or_skip(migrated(f"sqlite:///{tmp_path / 'descent.db'}" if request.param == "sqlite" else None))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):  # type: ignore[no-untyped-def]
    """An empty database, not migrated, on each backend: for tests of the migrations themselves."""
    from service.store import Database

    def urls() -> Iterator[str]:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'descent.db'}"
        else:
            yield from pg_database()

    for url in _or_skip(urls()):
        database = Database(url)
        try:
            yield database
        finally:
            database.engine.dispose()


@pytest.fixture
def pg_db():  # type: ignore[no-untyped-def]
    """A migrated, empty PostgreSQL database, for what only PostgreSQL does."""
    yield from _or_skip(migrated())


def embedded_app(tmp_path: Any, dispatcher: Any = None, **settings: Any) -> Iterator[Any]:
    """The API on an embedded backend under ``tmp_path`` (a migrated SQLite file; the SQL broker's
    file, or ``dispatcher``), its database disposed afterwards."""
    from service.api import create_app

    made = embedded_settings(tmp_path, **settings)
    database = migrated_database(made.database_url)
    try:
        yield create_app(made, {"TESTING": True}, db=database, dispatcher=dispatcher)
    finally:
        database.engine.dispose()


@pytest.fixture
def app(tmp_path):  # type: ignore[no-untyped-def]
    """The API on an embedded backend (SQLite file, SQL broker file): real parts, no servers.
    (tests/api/conftest.py gives the API tests one that sends no message.)"""
    yield from embedded_app(tmp_path)


@pytest.fixture
def guarded(tmp_path):  # type: ignore[no-untyped-def]
    """The API with DESCENT_AUTH=required on SQLite: (test client, database); make tokens with
    ``service.store.tokens.create_token(database, owner, admin)``."""
    for application in embedded_app(tmp_path, auth="required"):
        yield application.test_client(), application.extensions["descent"].db


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def run_job(app):  # type: ignore[no-untyped-def]
    """Run a stored job in this process with the worker's own code (``workers.runner``)."""
    from workers import runner
    from workers.state import WorkerState

    svc = app.extensions["descent"]
    state = WorkerState(settings=svc.settings, db=svc.db, worker_id="test:1", hostname="test",
                        queues=["cpu"], device="cpu")
    return lambda job_id: runner.execute(state, job_id)


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded service (an API process and one CPU worker), started once per test process for
    the modules that read only the jobs they made (client, CLI, generated client, browser): one
    start of its processes (seconds each) instead of one a module. Use it through ``shared``."""
    from testkit.processes import running

    yield from running("embedded", tmp_path_factory.mktemp("embedded-service"))


def shared(service: Any) -> Iterator[Any]:
    """``embedded_service`` for one module's tests (``yield from shared(embedded_service)`` in a
    module fixture); afterwards every job they left queued or running is cancelled."""
    yield service
    service.cancel_unfinished()


@pytest.fixture
def json_lines():  # type: ignore[no-untyped-def]
    """The root logger writing JSON lines (DESCENT_LOG_FORMAT=json) into a buffer; returns a
    function reading them."""
    import io
    import json
    import logging

    from service import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure("json")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    root.handlers[:], root.level = saved[0], saved[1]


@pytest.fixture
def redis_url() -> str:
    """A Redis database of this test's own (``redis_url_for_test``): skipped where none can be had
    (no redis-server, no DESCENT_TEST_REDIS_URL), failed in CI."""
    import redis

    try:
        return redis_url_for_test()
    except (OSError, RuntimeError, redis.exceptions.ConnectionError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Redis for the test: {exc}")
        pytest.skip(f"no Redis for the test (redis-server, or DESCENT_TEST_REDIS_URL): {exc}")
