"""Worker start-up: refusing where it could only do harm (and saying why), and several workers
starting together on a fresh embedded broker."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from service.engine import cuda_available
from service.queue import make_celery, prepare_embedded_broker
from service.store import Database
from service.store.migrate import upgrade
from testkit.backends import embedded_settings, settings_env
from testkit.processes import BIN


pytestmark = pytest.mark.integration

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


def test_gpu_pins_the_worker_process_to_one_device(tmp_path):
    """``descent worker --gpu 2`` becomes the Celery worker (the same process) seeing only GPU 2:
    CUDA is first touched in that process, never in a parent that forks it."""
    import time
    from pathlib import Path

    upgrade(Database(embedded_settings(tmp_path).database_url))
    proc = subprocess.Popen([str(BIN / "descent"), "worker", "--queues", "cpu", "--gpu", "2"],
                            env=settings_env(embedded_settings(tmp_path)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc_dir = Path(f"/proc/{proc.pid}")
        deadline = time.time() + 60
        while b"celery" not in (proc_dir / "cmdline").read_bytes() and time.time() < deadline:
            time.sleep(0.1)
        assert b"celery" in (proc_dir / "cmdline").read_bytes(), "the command did not become the worker"
        environ = (proc_dir / "environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=2" in environ and b"DESCENT_WORKER_QUEUES=cpu" in environ
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def queue_rows(tmp_path) -> list[str]:  # type: ignore[no-untyped-def]
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        return sorted(name for (name,) in conn.execute("SELECT name FROM kombu_queue"))


def test_preparing_the_embedded_broker_survives_losing_the_race(tmp_path, monkeypatch):
    """The loser of two processes creating a queue row at once gets a UNIQUE error: it retries."""
    from kombu.transport import sqlalchemy as sqla
    from sqlalchemy.exc import IntegrityError

    real, lost = sqla.Channel._get_or_create, []

    def lose_once(self, queue):  # type: ignore[no-untyped-def]
        if not lost:
            lost.append(queue)
            raise IntegrityError("INSERT INTO kombu_queue", {}, Exception("UNIQUE constraint failed"))
        return real(self, queue)

    monkeypatch.setattr(sqla.Channel, "_get_or_create", lose_once)
    prepare_embedded_broker(make_celery(embedded_settings(tmp_path)))
    assert lost == ["cpu"] and queue_rows(tmp_path) == ["cpu", "gpu"]


def test_processes_starting_together_on_a_fresh_embedded_broker(tmp_path):
    code = ("import sys; from testkit.backends import embedded_settings; from pathlib import Path; "
            "from service.queue import make_celery, prepare_embedded_broker; "
            "prepare_embedded_broker(make_celery(embedded_settings(Path(sys.argv[1]))))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert queue_rows(tmp_path) == ["cpu", "gpu"]
