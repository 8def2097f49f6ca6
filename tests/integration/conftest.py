"""Integration fixtures: the whole service, in real processes, on each backend."""
from __future__ import annotations

from typing import Iterator

import pytest

from testkit.processes import Service, service_on


def make_service(kind: str, tmp_path_factory: pytest.TempPathFactory, **overrides) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    yield from service_on(kind, tmp_path_factory.mktemp(kind), **overrides)


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def service(request, tmp_path_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    """API + two CPU workers, shared by a module's tests."""
    for svc in make_service(request.param, tmp_path_factory):
        svc.start(workers=2)
        yield svc
