"""A worker refuses to start where it could only do harm, and says why."""
from __future__ import annotations

import subprocess

import pytest

from service.engine import cuda_available
from service.store import Database
from service.store.migrate import upgrade
from tests.conftest import embedded_settings, settings_env
from tests.integration.harness import BIN


def start_worker(tmp_path, queues: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    env = settings_env(embedded_settings(tmp_path))
    return subprocess.run([str(BIN / "descent"), "worker", "--queues", queues], env=env, capture_output=True,
                          text=True, timeout=120)


def test_worker_refuses_a_database_behind_head(tmp_path):
    out = start_worker(tmp_path, "cpu")
    assert out.returncode == 78
    assert "descent db upgrade" in out.stderr


@pytest.mark.skipif(cuda_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_worker_refuses_to_start_without_cuda(tmp_path):
    upgrade(Database(embedded_settings(tmp_path).database_url))
    out = start_worker(tmp_path, "gpu")
    assert out.returncode == 78
    assert "no CUDA device" in out.stderr and "--queues cpu" in out.stderr
