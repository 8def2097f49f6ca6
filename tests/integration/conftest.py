"""Integration fixtures: the whole service, in real processes, on each backend; and when the GPU
check's tests (marker ``gpu_check``, minutes of runs of scripts/gpu_check.sh) are worth running."""
from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Iterator

import pytest

from testkit.processes import Service, service_on

ROOT = Path(__file__).resolve().parents[2]
# What the GPU check exercises that no other test does: its scripts, the engine, the workers
# (devices, the gpu queue) and the packages the wheels are fetched for.
GPU_CHECK_INPUTS = ("scripts/gpu_check.sh", "scripts/gpu_check.py", "scripts/gpu_deps.py",
                    "scripts/fetch_gpu_wheels.sh", "service/engine", "workers")
GPU_CHECK_PASSED = "descent/gpu_check_passed"  # the pytest cache key: the inputs' digest at the last pass
# The same digest, committed with the change it passed on: a fresh clone (CI) skips the check
# when its inputs are those it last passed on anywhere. A pass writes it; commit it with the change.
GPU_CHECK_RECORD = Path(__file__).with_name("gpu_check.passed")


def make_service(kind: str, tmp_path_factory: pytest.TempPathFactory, **overrides) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    yield from service_on(kind, tmp_path_factory.mktemp(kind), **overrides)


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def service(request, tmp_path_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    """API + two CPU workers, shared by a module's tests."""
    for svc in make_service(request.param, tmp_path_factory):
        svc.start(workers=2)
        yield svc


def gpu_check_digest() -> str:
    """A digest of GPU_CHECK_INPUTS' files and of pyproject's [project] table (the pins)."""
    digest = hashlib.sha256()
    for name in GPU_CHECK_INPUTS:
        path = ROOT / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {})
    digest.update(repr(sorted(project.items())).encode())
    return digest.hexdigest()[:16]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gpu_check`` tests where they passed before on these very inputs (the pytest
    cache or the committed record says so), unless DESCENT_TEST_GPU_CHECK=always."""
    gpu = [item for item in items if item.get_closest_marker("gpu_check")]
    config.stash[_GPU_ITEMS] = {item.nodeid for item in gpu}
    if not gpu or os.environ.get("DESCENT_TEST_GPU_CHECK") == "always":
        return
    cache = getattr(config, "cache", None)
    passed = {cache.get(GPU_CHECK_PASSED, None) if cache is not None else None,
              GPU_CHECK_RECORD.read_text().strip() if GPU_CHECK_RECORD.exists() else None}
    if gpu_check_digest() in passed:
        skip = pytest.mark.skip(reason="the GPU check passed on these scripts/gpu_*, service/engine, workers and "
                                       "pins (the pytest cache or gpu_check.passed says so); "
                                       "DESCENT_TEST_GPU_CHECK=always runs it anyway")
        for item in gpu:
            item.add_marker(skip)


_GPU_ITEMS = pytest.StashKey[set]()
# The ``gpu_check`` tests this process ran: those whose call passed, and any that failed or skipped.
_gpu_ran: dict[str, set[str]] = {"passed": set(), "not passed": set()}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "gpu_check" not in report.keywords:
        return
    if report.failed or report.skipped:
        _gpu_ran["not passed"].add(report.nodeid)
    elif report.when == "call":
        _gpu_ran["passed"].add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Where this process ran every ``gpu_check`` test and each passed, remember the inputs' digest
    (in the pytest cache and in the record)."""
    expected = session.config.stash.get(_GPU_ITEMS, set())
    if expected and _gpu_ran["passed"] == expected and not _gpu_ran["not passed"]:
        digest = gpu_check_digest()
        cache = getattr(session.config, "cache", None)
        if cache is not None:
            cache.set(GPU_CHECK_PASSED, digest)
        GPU_CHECK_RECORD.write_text(digest + "\n")
