"""Private PostgreSQL and Redis servers that tests may stop, restart and flush without touching
the machine's shared ones (fault tests start their own; every test process has a Redis of its own,
``testkit.backends.private_redis``)."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from testkit.processes import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} was not found (install the postgresql package)")
    return path


class PrivatePostgres:
    """A throwaway cluster on its own port, run as the postgres user when root. Durable (fsync,
    synchronous commits, full page writes: the server defaults, set explicitly), so a fault test
    that crashes it sees exactly what a production server keeps: a commit it acknowledged survives.
    ``addresses``: more addresses it listens on and trusts (a partition test's hosts' gateways)."""

    def __init__(self, addresses: tuple[str, ...] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="descent-pg-"))
        self.port = free_port()
        self.addresses = addresses
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        if addresses:
            with open(self.dir / "data" / "pg_hba.conf", "a") as hba:
                hba.writelines(f"host all all {address}/24 trust\n" for address in addresses)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, cwd=self.dir)

    def url_at(self, address: str, database: str = "postgres") -> str:
        return f"postgresql://postgres@{address}:{self.port}/{database}"

    def start(self) -> None:
        listen = ",".join(["127.0.0.1", *self.addresses])
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses={listen} "
                "-c fsync=on -c full_page_writes=on -c synchronous_commit=on -c max_connections=200")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In a child before it runs its program: SIGKILL it when the thread that started it ends
    (Linux's PR_SET_PDEATHSIG; tests start servers on their main thread), so a test process killed
    outright leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class PrivateRedis:
    """A redis-server on its own port, keeping nothing on disk: a restart loses every message.
    ``addresses``: more addresses it listens on; ``databases``: how many it has (Redis's 16 unless
    told)."""

    def __init__(self, addresses: tuple[str, ...] = (), databases: int = 16) -> None:
        self.port = free_port()
        self.addresses = addresses
        self.databases = databases
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_at(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"

    def start(self) -> None:
        # Protected mode refuses every address but loopback without a password; these are the test's own.
        reachable = ["--protected-mode", "no"] if self.addresses else []
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *self.addresses,
                                      *reachable, "--save", "", "--appendonly", "no",
                                      "--databases", str(self.databases)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pending(self, queue: str) -> int:
        """Messages of ``queue`` not yet acknowledged: waiting in the list, or delivered and unacked."""
        client = redis.Redis.from_url(self.url)
        return int(client.llen(queue)) + int(client.hlen("unacked"))

    def flushall(self) -> None:
        redis.Redis.from_url(self.url).flushall()

    def close(self) -> None:
        self.stop()
