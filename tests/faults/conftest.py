"""Fault fixtures: a private PostgreSQL and Redis per test module, and service factories (on them,
or on the embedded default) with short leases so recovery happens in seconds."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from testkit.backends import embedded_settings
from testkit.processes import Service
from testkit.servers import PrivatePostgres, PrivateRedis

FAST = {"lease_seconds": 2.0, "heartbeat_seconds": 0.4, "requeue_after": 2.0, "max_attempts": 3}


def _running(server: Any) -> Iterator[Any]:
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    yield from _running(PrivatePostgres())


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    yield from _running(PrivateRedis())


@pytest.fixture
def make_service(postgres, redis_server, tmp_path):  # type: ignore[no-untyped-def]
    """``make_service(workers=2, **settings)`` -> a started Service on the private servers, each
    test on a fresh database."""
    import sqlalchemy as sa

    from service.config import normalise_database_url

    started: list[Service] = []
    admin = sa.create_engine(normalise_database_url(postgres.url), isolation_level="AUTOCOMMIT")

    def make(workers: int = 2, **overrides: object) -> Service:
        name = f"faults_{len(started)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        redis_server.flushall()
        settings = replace(embedded_settings(tmp_path / name, **{**FAST, **overrides}),
                           database_url=normalise_database_url(postgres.url.rsplit("/", 1)[0] + "/" + name),
                           broker_url=redis_server.url)
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        service = Service(settings=settings, log_dir=tmp_path / name)
        started.append(service)
        return service.start(workers=workers)

    yield make
    for service in started:
        service.stop(grace=0)
    admin.dispose()


@pytest.fixture
def make_embedded_service(tmp_path):  # type: ignore[no-untyped-def]
    """``make_embedded_service(workers=2)`` -> a started Service on the embedded default (SQLite
    and the SQL broker), with the same short leases."""
    started: list[Service] = []

    def make(workers: int = 2, **overrides: object) -> Service:
        data_dir = tmp_path / f"embedded_{len(started)}"
        data_dir.mkdir(parents=True)
        service = Service(settings=embedded_settings(data_dir, **{**FAST, **overrides}), log_dir=data_dir)
        started.append(service)
        return service.start(workers=workers)

    yield make
    for service in started:
        service.stop(grace=0)
