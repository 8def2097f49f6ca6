"""Real processes for integration tests and benchmarks: the API (`descent api`) and Celery workers
(`descent worker`), on PostgreSQL + Redis or on the embedded default."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import requests

from service.config import Settings
from service.store import Database
from service.store.migrate import upgrade
from testkit.backends import embedded_settings, pg_database, redis_url_for_test, settings_env
from service.status import FINISHED

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """An API process and worker processes sharing one database and broker."""

    settings: Settings
    log_dir: Path
    port: int = field(default_factory=free_port)
    api: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**settings_env(self.settings), "DESCENT_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}

    def db(self) -> Database:
        return Database(self.settings.database_url)

    def start(self, workers: int = 1) -> "Service":
        """Migrate the database, then start the workers and the API together (each takes seconds
        to import and warm up) and wait until the API answers and the workers heartbeat."""
        database = self.db()
        upgrade(database)
        database.engine.dispose()
        for _ in range(workers):
            self.start_worker()
        self.start_api()
        self.wait_for_workers(workers)
        return self

    def start_api(self) -> None:
        log = open(self.log_dir / "api.log", "ab")
        self.api = subprocess.Popen([str(BIN / "descent"), "api", "--port", str(self.port)], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            if self.api.poll() is not None:
                raise RuntimeError(f"API exited: {(self.log_dir / 'api.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("API did not become healthy")

    def start_worker(self, queues: str = "cpu") -> subprocess.Popen:
        n = len(self.workers)
        log = open(self.log_dir / f"worker{n}.log", "ab")
        proc = subprocess.Popen([str(BIN / "descent"), "worker", "--queues", queues, "--loglevel", "INFO"],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, count: int, timeout: float = 90) -> None:
        """Wait until ``count`` live worker processes heartbeat into the database."""
        from service.store.fleet import list_workers

        db = self.db()
        deadline = time.time() + timeout
        while time.time() < deadline:
            alive = {w.pid for w in list_workers(db, alive_within=30)}
            if len(alive & {p.pid for p in self.workers if p.poll() is None}) >= count:
                db.engine.dispose()
                return
            time.sleep(0.2)
        raise RuntimeError("workers did not start: " + self.logs())

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))

    def token(self, owner: str, admin: bool = False) -> str:
        """A new API token for ``owner``, made as an operator does (``descent tokens create``)."""
        out = subprocess.run([str(BIN / "descent"), "tokens", "create", "--owner", owner, *(["--admin"] if admin else [])],
                             env=self.env, capture_output=True, text=True, timeout=120, check=True)
        return out.stdout.strip().splitlines()[-1]

    # -- client helpers -------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], **headers: str) -> dict[str, Any]:
        resp = self.http.post(self.url + "/v1/jobs", json=spec, headers=headers, timeout=30)
        assert resp.status_code == 202, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        """The job, retrying a 503 (database briefly unavailable) as any client should."""
        for _ in range(100):
            resp = self.http.get(f"{self.url}/v1/jobs/{job_id}", timeout=30)
            if resp.status_code != 503:
                return resp.json()
            time.sleep(0.1)
        raise AssertionError(f"GET job answered 503 for 10 s: {resp.text}")

    def wait(self, job_id: str, timeout: float = 120, poll: float = 0.05) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.job(job_id)
            if job["status"] in FINISHED:
                return job
            time.sleep(poll)
        raise AssertionError(f"job {job_id} still {self.job(job_id)['status']} after {timeout}s\n{self.logs()}")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Wait until ``condition()`` holds; fail naming ``what`` (and with the logs) if it never does."""
        deadline = time.time() + timeout
        while not condition():
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting until {what}\n{self.logs()}")
            time.sleep(0.02)

    def wait_status(self, job_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.job(job_id)
            if job["status"] == status:
                return job
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} never reached {status}: {self.job(job_id)}")

    def history(self, job_id: str, **params: Any) -> list[dict[str, Any]]:
        rows, start = [], 0
        while start is not None:
            page = self.http.get(f"{self.url}/v1/jobs/{job_id}/history", params={**params, "start": start, "limit": 100000},
                                 timeout=60).json()
            rows.extend(page["rows"])
            start = page["next_start"]
        return rows

    def cancel_unfinished(self) -> None:
        """Cancel every queued or running job, so that the next user of a shared service finds its
        workers free (a test that failed may have left a job running for minutes)."""
        for status in ("running", "queued"):
            cursor = None
            while True:
                page = self.http.get(f"{self.url}/v1/jobs", params={"status": status, "limit": 1000, "cursor": cursor},
                                     timeout=30).json()
                for job in page["jobs"]:
                    self.http.post(f"{self.url}/v1/jobs/{job['id']}/cancel", timeout=30)
                cursor = page["next_cursor"]
                if cursor is None:
                    break

    # -- process control ------------------------------------------------------------------
    def kill_worker(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop(self, grace: float = 15.0) -> None:
        """Stop every process: SIGTERM (a clean shutdown: a worker hands its job back and marks
        itself stopped, 3-5 s), then SIGKILL for any still running after ``grace`` seconds. With
        ``grace=0`` they are killed at once: a teardown, which checks nothing of the shutdown (the
        fault and fleet tests check clean shutdowns with ``kill_worker``)."""
        for proc in [*self.workers, self.api]:
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in [*self.workers, self.api]:
            if proc is None:
                continue
            try:
                proc.wait(grace if grace > 0 else 5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def service_on(kind: str, data_dir: Path, **overrides: Any) -> Iterator[Service]:
    """A (not yet started) Service on ``kind``: ``postgres`` (a fresh database and a Redis
    database of its own, on the test process's redis-server) or ``embedded``; its processes killed,
    and its database dropped, when closed."""
    settings = embedded_settings(data_dir, **overrides)
    pg = None
    if kind == "postgres":
        pg = pg_database()
        settings = replace(settings, database_url=next(pg), broker_url=redis_url_for_test())
    service = Service(settings=settings, log_dir=data_dir)
    try:
        yield service
    finally:
        service.stop(grace=0)
        if pg is not None:
            pg.close()


def running(kind: str, data_dir: Path, workers: int = 1, **overrides: Any) -> Iterator[Service]:
    """``service_on``, started: the API and ``workers`` CPU workers, up and heartbeating."""
    for service in service_on(kind, data_dir, **overrides):
        service.start(workers=workers)
        yield service


def drain(response: Any, piece: int = 1 << 20) -> int:
    """Read a streamed HTTP response to its end in ``piece``-byte reads, keeping nothing;
    returns its length (benchmarks measure exports without holding them)."""
    total = 0
    while chunk := response.read(piece):
        total += len(chunk)
    return total
