"""Fixtures shared by every test: the lesson's specs, databases on each backend (SQLite file, a fresh
PostgreSQL database), the API app and client, and running a stored job with the worker's code."""
from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from service.config import Settings, load_settings

LESSON_LOGLOG = {
    "objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w",
    "x0": [[5, 10], [1, 2]], "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001},
}
LESSON_PARABOLA = {
    "objective": "10 * (x ** 2).sum()",
    "x0": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], "steps": 0,
}


@pytest.fixture
def lesson_loglog() -> dict[str, Any]:
    return dict(LESSON_LOGLOG)


@pytest.fixture
def lesson_parabola() -> dict[str, Any]:
    return dict(LESSON_PARABOLA)


# -- backends -------------------------------------------------------------------------------
PG_ADMIN_URL = os.environ.get("DESCENT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DESCENT_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Embedded settings (SQLite + SQL broker) under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        os.environ["DESCENT_DATA_DIR"] = str(data_dir)
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return replace(settings, **overrides)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make a child process load the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    env.update({
        "DESCENT_DATA_DIR": str(settings.data_dir),
        "DESCENT_DATABASE_URL": settings.database_url,
        "DESCENT_BROKER_URL": settings.broker_url,
        "DESCENT_LEASE_SECONDS": str(settings.lease_seconds),
        "DESCENT_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "DESCENT_MAX_ATTEMPTS": str(settings.max_attempts),
        "DESCENT_REQUEUE_AFTER": str(settings.requeue_after),
    })
    return env


def _pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards. Without a reachable
    server the test is skipped with the reason, except under CI (``CI=true``), where it fails."""
    import sqlalchemy as sa

    from service.config import normalise_database_url

    admin = sa.create_engine(normalise_database_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 5})
    name = f"descent_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = admin.connect()
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL is not reachable at {PG_ADMIN_URL} (DESCENT_TEST_PG_URL): {str(exc.orig).strip()[:200]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; under CI=true it is required")
        pytest.skip(reason)
    with conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = normalise_database_url(PG_ADMIN_URL).rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
                {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    yield from _pg_database()


def _migrated(url: str | None = None) -> Iterator[Any]:
    """A migrated Database at ``url``, or on a fresh PostgreSQL database when None; disposed after."""
    from service.store import Database
    from service.store.migrate import upgrade

    pg = _pg_database() if url is None else None
    database = Database(next(pg) if pg is not None else url)
    upgrade(database)
    try:
        yield database
    finally:
        database.engine.dispose()
        if pg is not None:
            pg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):  # type: ignore[no-untyped-def]
    """A migrated, empty database on each backend."""
    yield from _migrated(f"sqlite:///{tmp_path / 'descent.db'}" if request.param == "sqlite" else None)


@pytest.fixture
def pg_db():  # type: ignore[no-untyped-def]
    """A migrated, empty PostgreSQL database, for what only PostgreSQL does."""
    yield from _migrated()


@pytest.fixture
def app(tmp_path):  # type: ignore[no-untyped-def]
    """The API on an embedded backend (SQLite file, SQL broker file): real parts, no servers."""
    from service.api import create_app
    from service.store import Database
    from service.store.migrate import upgrade

    settings = embedded_settings(tmp_path)
    database = Database(settings.database_url)
    upgrade(database)
    application = create_app(settings, {"TESTING": True}, db=database)
    yield application
    database.engine.dispose()


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
