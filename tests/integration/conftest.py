"""Integration fixtures: the whole service, in real processes, on each backend."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import pytest

from testkit.backends import REDIS_URL, embedded_settings, pg_database, redis_url_for_test
from testkit.processes import Service


def make_service(kind: str, tmp_path_factory: pytest.TempPathFactory, **overrides) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp(kind)
    settings = embedded_settings(data_dir, **overrides)
    pg = None
    if kind == "postgres":
        pg = pg_database()
        settings = replace(settings, database_url=next(pg), broker_url=redis_url_for_test(REDIS_URL))
    service = Service(settings=settings, log_dir=data_dir)
    try:
        yield service
    finally:
        service.stop()
        if pg is not None:
            pg.close()


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def service(request, tmp_path_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    """API + two CPU workers, shared by a module's tests."""
    for svc in make_service(request.param, tmp_path_factory):
        svc.start(workers=2)
        yield svc
