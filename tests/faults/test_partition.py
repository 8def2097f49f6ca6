"""Partitions as a multi-host fleet meets them: workers on hosts of their own (network namespaces
over veth pairs) are caught inside one of their write transactions, holding row locks, and then
one is cut off (its link silent), one dies with its link deleted, and one is frozen (SIGSTOP) for
longer than its lease. A healthy worker must reclaim every job of theirs within a few leases and
stay ``alive``; the API must answer every request within 5 s and never 500; after the cut heals
and the frozen worker resumes, nothing they write lands, and every job ends exactly once with a
history equal to an uninterrupted run's. Skipped, with the reason, where ip netns is unavailable."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from service.config import normalise_database_url
from testkit.backends import embedded_settings
from testkit.netns import Host, unavailable
from testkit.processes import BIN, Service
from testkit.servers import PrivatePostgres, PrivateRedis
from tests.helpers.faults import assert_history_exact

pytestmark = pytest.mark.integration

LEASE = 4.0
SETTINGS = {"lease_seconds": LEASE, "heartbeat_seconds": 0.5, "requeue_after": LEASE, "max_attempts": 5}
# Long enough to be running through the whole fault; record every 20 steps, a chunk about every 0.25 s.
SPEC = {"objective": {"name": "rosenbrock"}, "steps": 30_000, "record": {"every": 20},
        "optimizer": {"name": "adam", "lr": 0.001}}
RECLAIM_WITHIN = 30.0
API_WITHIN = 5.0


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, Any]]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    made: dict[str, Host] = {}
    servers: list[Any] = []
    try:
        for i, name in enumerate(("cut", "dead", "frozen")):
            made[name] = Host(i + 1)
            made[name].create()
        gateways = tuple(h.gateway for h in made.values())
        pg = PrivatePostgres(gateways)
        servers.append(pg)
        pg.start()
        redis_server = PrivateRedis(gateways)
        servers.append(redis_server)
        redis_server.start()
        yield {"hosts": made, "pg": pg, "redis": redis_server}
    finally:
        for server in reversed(servers):
            server.close()
        for host in made.values():
            host.delete()


def in_write_transaction(admin: sa.Engine, address: str) -> bool:
    """Whether a session from ``address`` is inside a transaction that has written (holds locks)."""
    with admin.connect() as conn:
        return bool(conn.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE client_addr = CAST(:a AS inet) AND backend_xid IS NOT NULL"),
            {"a": address}))


def freeze_inside_a_transaction(proc: subprocess.Popen, admin: sa.Engine, address: str, tries: int = 3000) -> None:
    """SIGSTOP ``proc`` at a moment it holds an open write transaction (stop, look, go on if not)."""
    for i in range(tries):
        os.kill(proc.pid, signal.SIGSTOP)
        if in_write_transaction(admin, address):
            return
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.002 + 0.001 * (i % 7))
    raise AssertionError(f"the worker at {address} was never caught inside a write transaction")


class Prober(threading.Thread):
    """Asks the API for a job, the job list and /readyz over and over; keeps the slowest answer
    and every status."""

    def __init__(self, service: Service, job_id: str) -> None:
        super().__init__(daemon=True)
        self.service, self.job_id = service, job_id
        self.stop = threading.Event()
        self.slowest: dict[str, float] = {}
        self.statuses: dict[str, set[int]] = {}

    def run(self) -> None:
        paths = {"job": f"/v1/jobs/{self.job_id}", "list": "/v1/jobs?limit=50", "readyz": "/readyz"}
        http = requests.Session()
        while not self.stop.is_set():
            for name, path in paths.items():
                started = time.monotonic()
                try:
                    status = http.get(self.service.url + path, timeout=30).status_code
                except requests.RequestException:
                    status = 0
                self.slowest[name] = max(self.slowest.get(name, 0.0), time.monotonic() - started)
                self.statuses.setdefault(name, set()).add(status)
            self.stop.wait(0.2)


def worker_states(service: Service) -> dict[int, str]:
    workers = service.http.get(service.url + "/v1/workers", timeout=10).json()["workers"]
    return {w["pid"]: w["state"] for w in workers}


def holder(job: dict[str, Any]) -> int | None:
    """The pid of the worker that holds (or last held) ``job``."""
    worker = job.get("worker")
    return int(worker.rsplit(":", 1)[1]) if worker else None


def holders(service: Service, job_ids: list[str]) -> dict[str, int | None]:
    return {job_id: holder(service.job(job_id)) for job_id in job_ids}


def reclaim_waits(service: Service, job_ids: list[str], healthy: int, since: float,
                  timeout: float) -> dict[str, float]:
    """Until the ``healthy`` worker has taken over each of ``job_ids`` (or finished it), how long
    each one waited for it: from ``since`` (the fault) or from the moment the healthy worker came
    free of the job before, whichever is later. One healthy worker runs one job at a time, so a
    job queued behind another measures that job's length, not the fleet's recovery."""
    waits: dict[str, float] = {}
    free_since, running = since, None
    deadline = time.monotonic() + timeout
    while len(waits) < len(job_ids):
        assert time.monotonic() < deadline, \
            f"the healthy worker took over only {waits} of {job_ids}\n{service.logs()}"
        now, jobs = time.monotonic(), {job_id: service.job(job_id) for job_id in job_ids}
        taken = {job_id for job_id, job in jobs.items()
                 if job["status"] == "succeeded" or (job["status"] == "running" and holder(job) == healthy)}
        if running is not None and (jobs[running]["status"] != "running" or holder(jobs[running]) != healthy):
            free_since, running = now, None  # it ended (or was handed back): the worker is free again
        for job_id in sorted(taken - set(waits)):
            waits[job_id] = now - free_since
            if jobs[job_id]["status"] == "running":
                running = job_id
        time.sleep(0.1)
    return waits


def test_a_cut_a_dead_and_a_frozen_worker_never_stall_the_fleet(hosts, tmp_path):
    pg, redis_server, net = hosts["pg"], hosts["redis"], hosts["hosts"]
    admin = sa.create_engine(normalise_database_url(pg.url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text('CREATE DATABASE "partition"'))
    db_url = normalise_database_url(pg.url.rsplit("/", 1)[0] + "/partition")
    settings = replace(embedded_settings(tmp_path, **SETTINGS), database_url=db_url, broker_url=redis_server.url)
    service = Service(settings=settings, log_dir=tmp_path)
    service.start(workers=0)
    victims: dict[str, subprocess.Popen] = {}
    try:
        for name, host in net.items():
            env = {**service.env, "DESCENT_DATABASE_URL": normalise_database_url(
                pg.url_at(host.gateway, "partition")), "DESCENT_BROKER_URL": redis_server.url_at(host.gateway)}
            log = open(tmp_path / f"worker-{name}.log", "ab")
            victims[name] = subprocess.Popen(host.command(str(BIN / "descent"), "worker", "--queues", "cpu",
                                                          "--loglevel", "INFO"),
                                             env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            service.workers.append(victims[name])
        service.wait_for_workers(3)
        # Different learning rates: separate jobs, not one batch, so each victim holds its own.
        job_ids = [service.submit({**SPEC, "optimizer": {"name": "adam", "lr": 0.001 * (1 + i / 10)}})["id"]
                   for i in range(3)]
        service.wait_for(lambda: {p for p in holders(service, job_ids).values()} >= {p.pid for p in victims.values()},
                         "each victim holds a running job", timeout=60)
        held = {name: [j for j, pid in holders(service, job_ids).items() if pid == proc.pid]
                for name, proc in victims.items()}
        healthy = service.start_worker()
        service.wait_for(lambda: worker_states(service).get(healthy.pid) == "alive", "the healthy worker is alive")
        prober = Prober(service, job_ids[0])
        prober.start()

        # Each victim is caught holding an open write transaction, then: cut off; dead behind a
        # deleted link; frozen.
        for name in ("cut", "dead", "frozen"):
            freeze_inside_a_transaction(victims[name], admin, net[name].address)
        net["cut"].cut()
        os.kill(victims["cut"].pid, signal.SIGCONT)  # running, but nothing crosses its link
        net["dead"].delete()
        os.kill(victims["dead"].pid, signal.SIGKILL)
        faulted = time.monotonic()

        victim_jobs = [j for ids in held.values() for j in ids]
        waits = reclaim_waits(service, victim_jobs, healthy.pid, since=faulted, timeout=RECLAIM_WITHIN + 240)
        assert max(waits.values()) <= RECLAIM_WITHIN, f"reclaim waits {waits}"
        assert worker_states(service)[healthy.pid] == "alive"

        # The cut heals and the frozen worker resumes: whatever they still try to write is fenced.
        net["cut"].heal()
        os.kill(victims["frozen"].pid, signal.SIGCONT)
        jobs = [service.wait(j, timeout=240) for j in job_ids]
        prober.stop.set()
        prober.join(60)
        assert worker_states(service)[healthy.pid] == "alive"
        for name in ("job", "list", "readyz"):
            assert prober.slowest[name] <= API_WITHIN, (name, prober.slowest)
            assert not {s for s in prober.statuses[name] if s >= 500 and s != 503} and 0 not in prober.statuses[name], \
                (name, prober.statuses)
        for job, spec in zip(jobs, [{**SPEC, "optimizer": {"name": "adam", "lr": 0.001 * (1 + i / 10)}} for i in range(3)]):
            assert job["status"] == "succeeded", job
            assert_history_exact(service, job, spec)
    finally:
        for proc in victims.values():
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        service.stop()
        admin.dispose()
