"""Every setting Descent reads from the environment, declared once.

Each ``DESCENT_*`` variable is one dataclass field below, with its type, its default and one line
of doc in the field's metadata; ``load_settings()`` reads exactly these, and a value that does not
parse raises ``ConfigError`` naming the variable and what it expects (the commands print that one
line and exit non-zero). Settings are read when ``load_settings()`` is called, never at import.

With neither ``DESCENT_DATABASE_URL`` nor ``DESCENT_BROKER_URL`` set, Descent runs *embedded*:
SQLite and a SQL-backed Celery broker under ``DESCENT_DATA_DIR``, no server processes needed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from service.errors import DescentError, ErrorCode


class ConfigError(DescentError):
    """A ``DESCENT_*`` variable whose value cannot be used; the message is one line."""

    code = ErrorCode.INVALID_SETTING


def env(name: str, doc: str, default: Any) -> Any:
    """A field read from the environment variable ``name``."""
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class Limits:
    """Ceilings on what one job spec may ask for; a spec over one is refused naming it."""

    max_elements: int = env("DESCENT_MAX_ELEMENTS", "elements of x0", 1_000_000)
    max_steps: int = env("DESCENT_MAX_STEPS", "steps of one job", 1_000_000)
    max_recorded_values: int = env("DESCENT_MAX_RECORDED_VALUES", "numbers one job's history may hold", 100_000_000)
    max_expression_chars: int = env("DESCENT_MAX_EXPRESSION_CHARS", "characters of an objective", 2_000)
    max_seconds: float = env("DESCENT_MAX_SECONDS", "seconds one job may run (stop.max_seconds at most)", 3_600.0)
    max_body_bytes: int = env("DESCENT_MAX_BODY_BYTES", "bytes of a request body", 32 * 1024 * 1024)
    max_objective_bytes: int = env("DESCENT_MAX_OBJECTIVE_BYTES", "bytes one evaluation of an objective "
                                   "(its intermediate tensors, gradient and optimiser state) may take at peak",
                                   1024 * 1024 * 1024)
    max_sweep_jobs: int = env("DESCENT_MAX_SWEEP_JOBS", "jobs one sweep may make (the grid's product times its starts)",
                              100_000)
    # Fixed by the language, not configurable:
    max_expression_nodes: int = 500
    max_expression_depth: int = 50
    max_constant: float = 1e12
    max_exponent: float = 1_000.0
    max_tags: int = 32


@dataclass(frozen=True)
class Quotas:
    """Ceilings per owner (admins are exempt); a submission over one is answered 429."""

    submissions_per_minute: int = env("DESCENT_QUOTA_SUBMISSIONS_PER_MINUTE", "jobs one owner may submit per minute", 600)
    active_jobs: int = env("DESCENT_QUOTA_ACTIVE_JOBS", "jobs one owner may have queued or running", 20_000)
    recorded_values: int = env("DESCENT_QUOTA_RECORDED_VALUES", "history values one owner's jobs may store "
                               "(each job reserves what its spec may record)", 2_000_000_000)


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one process. A ``None`` default is derived from the others
    in ``load_settings`` (embedded paths, the API's URL, the hard time limit)."""

    data_dir: Path = env("DESCENT_DATA_DIR", "embedded state (SQLite files); default ./.descent", Path(".descent"))
    database_url: str = env("DESCENT_DATABASE_URL", "SQLAlchemy URL; default SQLite in the data dir", None)  # type: ignore[assignment]
    broker_url: str = env("DESCENT_BROKER_URL", "Celery broker URL; default a SQL broker in the data dir", None)  # type: ignore[assignment]
    host: str = env("DESCENT_HOST", "address the API binds", "127.0.0.1")
    port: int = env("DESCENT_PORT", "port the API listens on", 8000)
    api_threads: int = env("DESCENT_API_THREADS", "request threads of one API process for ordinary requests "
                           "(waiting and streaming requests have their own, DESCENT_MAX_WAITERS)", 16)
    max_waiters: int = env("DESCENT_MAX_WAITERS", "requests one API process serves while they wait (?wait) or "
                           "stream (history); past it a ?wait answers at once and a stream is a 503", 256)
    api_url: str = env("DESCENT_URL", "where client commands find the API; default http://127.0.0.1:PORT", None)  # type: ignore[assignment]
    lease_seconds: float = env("DESCENT_LEASE_SECONDS", "a worker's hold on its job, renewed while it runs", 30.0)
    heartbeat_seconds: float = env("DESCENT_HEARTBEAT_SECONDS", "seconds between worker heartbeats", 5.0)
    worker_lost_after: int = env("DESCENT_WORKER_LOST_AFTER", "missed heartbeats after which a worker is shown "
                                 "lost", 3)
    worker_retention: float = env("DESCENT_WORKER_RETENTION_SECONDS", "seconds a lost worker stays listed "
                                  "before it is pruned", 86_400.0)
    max_attempts: int = env("DESCENT_MAX_ATTEMPTS", "lost workers a job survives before it fails", 3)
    requeue_after: float = env("DESCENT_REQUEUE_AFTER", "seconds queued before the reconciler re-sends a job", 30.0)
    task_time_limit: float = env("DESCENT_TASK_TIME_LIMIT", "seconds on one job before its worker exits; "
                                 "default DESCENT_MAX_SECONDS + 400", None)  # type: ignore[assignment]
    torch_threads: int = env("DESCENT_TORCH_THREADS", "torch intra-op threads per worker process", 1)
    log_format: str = env("DESCENT_LOG_FORMAT", "text, or json: one JSON object per log line, with the job id on "
                          "each line a job causes", "text")
    gpu_wait_seconds: float = env("DESCENT_GPU_WAIT_SECONDS", "seconds a device: gpu job waits for a GPU "
                                  "worker before it fails", 3600.0)
    auto_gpu_min_elements: int = env("DESCENT_AUTO_GPU_MIN_ELEMENTS", "device: auto runs a job on a GPU (when one "
                                     "heartbeats) if x has at least this many elements", 100_000)
    auto_gpu_min_batch: int = env("DESCENT_AUTO_GPU_MIN_BATCH", "or if its batch (a sweep's starts) holds at "
                                  "least this many jobs", 1_000)
    gpu_without_cuda: str = env("DESCENT_GPU_WITHOUT_CUDA", "tests only: yes lets a worker serve the gpu queue "
                                "without CUDA, running its jobs on the CPU", "no")
    batch_max: int = env("DESCENT_BATCH_MAX", "compatible queued jobs a worker claims and runs together as one "
                         "batch, 1 to 10,000 (1 turns batching off)", 4096)
    worker_queues: str | None = env("DESCENT_WORKER_QUEUES", "queues a worker consumes (set by descent worker); "
                                    "default Celery's -Q", None)
    auth: str | None = env("DESCENT_AUTH", "required or off; default off when the API binds a loopback address, "
                    "required otherwise", None)
    auth_off_on_network: str = env("DESCENT_AUTH_OFF_ON_NETWORK", "yes lets DESCENT_AUTH=off serve a "
                                   "non-loopback address (anyone who reaches it acts as admin)", "no")
    token: str | None = env("DESCENT_TOKEN", "the API token client commands send", None)
    allowed_hosts: str | None = env("DESCENT_ALLOWED_HOSTS", "comma-separated Host names the API answers; "
                                    "default the loopback names on a loopback bind, required otherwise", None)
    allowed_origins: str = env("DESCENT_ALLOWED_ORIGINS", "comma-separated browser origins allowed besides "
                               "the API's own (CORS is off without them)", "")
    history_retention: float | None = env("DESCENT_HISTORY_RETENTION_SECONDS", "seconds a finished job keeps its "
                                          "history (then the workers delete it; the job stays); default forever",
                                          None)
    job_retention: float | None = env("DESCENT_JOB_RETENTION_SECONDS", "seconds a finished job is kept (then the "
                                      "workers delete it, as DELETE /v1/jobs/ID does); default forever", None)
    retention_interval: float = env("DESCENT_RETENTION_INTERVAL_SECONDS", "seconds between a worker's retention "
                                    "clean-ups (one at a time across the fleet)", 300.0)
    db_statement_timeout: float | None = env("DESCENT_DB_STATEMENT_TIMEOUT", "seconds one SQL statement of "
                                             "Descent's may run on PostgreSQL (0: no limit); default 10 leases, "
                                             "at least 300", None)
    db_lock_timeout: float | None = env("DESCENT_DB_LOCK_TIMEOUT", "seconds a statement waits for a lock (a row "
                                        "another session holds) before it gives up: the API answers 503 "
                                        "database_unavailable; default a quarter lease, 1 to 3", None)
    db_idle_in_transaction_timeout: float | None = env(
        "DESCENT_DB_IDLE_IN_TRANSACTION_TIMEOUT", "seconds PostgreSQL lets a session sit idle inside a "
        "transaction (a frozen or cut-off process) before it ends the session and frees its locks; default one "
        "lease, at least 2", None)
    db_tcp_timeout: float | None = env("DESCENT_DB_TCP_TIMEOUT", "seconds a silent peer keeps a PostgreSQL "
                                       "connection on either end (TCP keepalives and tcp_user_timeout, client and "
                                       "server side); default one lease, at least 2", None)
    db_pool_timeout: float = env("DESCENT_DB_POOL_TIMEOUT", "seconds a request waits for a free pooled database "
                                 "connection before it is answered 503 database_unavailable", 3.0)
    db_connect_timeout: float = env("DESCENT_DB_CONNECT_TIMEOUT", "seconds to open a PostgreSQL connection "
                                    "(whole seconds, at least 2)", 5.0)
    admission_processes: int = env("DESCENT_ADMISSION_PROCESSES", "processes of each API process that parse and "
                                   "check job specs of over 1 MiB, so a big body never holds the request threads "
                                   "(health probes included); 0 checks them on the request thread", 2)
    inline_elements: int = env("DESCENT_INLINE_ELEMENTS", "elements of a result's x or grad a job document "
                               "carries inline; a bigger one is a summary and a link (GET /v1/jobs/ID/x), and a "
                               "worker stores it in binary", 10_000)
    broker_timeout: float = env("DESCENT_BROKER_TIMEOUT", "seconds a broker (Redis) socket waits to connect or "
                                "for a reply before the call fails", 5.0)
    limits: Limits = field(default_factory=Limits)
    quotas: Quotas = field(default_factory=Quotas)

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+")

    @property
    def worker_lost_seconds(self) -> float:
        """How long a worker may go without a heartbeat before it counts as lost."""
        return self.worker_lost_after * self.heartbeat_seconds

    @property
    def retention_on(self) -> bool:
        """Whether the workers clean up finished jobs or their histories (either retention set)."""
        return self.history_retention is not None or self.job_retention is not None

    @property
    def database_timeouts(self) -> "DatabaseTimeouts":
        """What bounds each of this process's database connections in time (unset ones derived
        from the lease, so the server ends a dead or frozen process's session within about one)."""
        return DatabaseTimeouts.for_lease(
            self.lease_seconds, statement=self.db_statement_timeout, lock=self.db_lock_timeout,
            idle_in_transaction=self.db_idle_in_transaction_timeout, tcp=self.db_tcp_timeout,
            pool=self.db_pool_timeout, connect=self.db_connect_timeout)

    @property
    def gpu_on_cpu(self) -> bool:
        """Tests only: a worker serves the gpu queue without CUDA, on the CPU (DESCENT_GPU_WITHOUT_CUDA)."""
        return self.gpu_without_cuda == "yes"


@dataclass(frozen=True)
class DatabaseTimeouts:
    """The time bounds of a PostgreSQL connection, in seconds (``Settings.database_timeouts``).
    The defaults are those of the default 30 s lease."""

    statement: float = 300.0  # statement_timeout (0: none)
    lock: float = 3.0  # lock_timeout
    idle_in_transaction: float = 30.0  # idle_in_transaction_session_timeout
    tcp: float = 30.0  # a silent peer is dropped within about this (keepalives, tcp_user_timeout)
    pool: float = 3.0  # waiting for a pooled connection
    connect: float = 5.0  # connect_timeout

    @classmethod
    def for_lease(cls, lease: float, statement: float | None = None, lock: float | None = None,
                  idle_in_transaction: float | None = None, tcp: float | None = None, pool: float = 3.0,
                  connect: float = 5.0) -> "DatabaseTimeouts":
        """Bounds for a fleet whose leases last ``lease`` seconds: what is not given is derived."""
        return cls(
            statement=statement if statement is not None else max(300.0, 10 * lease),
            lock=lock if lock is not None else min(3.0, max(1.0, lease / 4)),
            idle_in_transaction=idle_in_transaction if idle_in_transaction is not None else max(2.0, lease),
            tcp=tcp if tcp is not None else max(2.0, lease),
            pool=pool, connect=connect)

    def keepalives(self) -> tuple[int, int, int]:
        """(idle, interval, count) in whole seconds: a peer that stops answering is given up after
        about ``idle + interval * count``, five sixths of ``tcp``."""
        return max(1, round(self.tcp / 3)), max(1, round(self.tcp / 6)), 3


_DATABASE_VARIABLES = ("lease_seconds", "db_statement_timeout", "db_lock_timeout", "db_idle_in_transaction_timeout",
                       "db_tcp_timeout", "db_pool_timeout", "db_connect_timeout")


def database_timeouts_from_env() -> DatabaseTimeouts:
    """``Settings.database_timeouts`` from the environment's lease and DESCENT_DB_* variables
    only (what a ``Database`` made without explicit timeouts uses). Raises ConfigError."""
    values = _from_env(Settings, only=_DATABASE_VARIABLES)
    _check_database_timeouts(Settings(**values))
    return Settings(**values).database_timeouts


def _check_database_timeouts(settings: Settings) -> None:
    if settings.db_connect_timeout < 2:
        raise ConfigError(f"DESCENT_DB_CONNECT_TIMEOUT must be at least 2 seconds, got {settings.db_connect_timeout:g}")
    for name, seconds in (("DESCENT_DB_POOL_TIMEOUT", settings.db_pool_timeout),
                          ("DESCENT_BROKER_TIMEOUT", settings.broker_timeout),
                          ("DESCENT_DB_TCP_TIMEOUT", settings.db_tcp_timeout)):
        if seconds is not None and seconds <= 0:
            raise ConfigError(f"{name} must be more than 0 seconds, got {seconds:g}")


# The most jobs one batch (and one task message) holds: its ids travel in SQL IN lists and messages.
MAX_BATCH = 10_000


def normalise_database_url(url: str) -> str:
    """Map a plain ``postgresql://`` URL to the psycopg 3 driver that Descent installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


_NUMBERS = {"int": (int, "an integer"), "float": (float, "a number")}


def _parse(name: str, kind: str, raw: str) -> Any:
    """``raw`` as the field's type (``kind``, as annotated); ConfigError naming ``name`` if not."""
    if kind == "Path":
        return Path(raw)
    if kind not in _NUMBERS:
        return raw
    parse, expected = _NUMBERS[kind]
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {expected}, got {raw[:40]!r}") from None
    if not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be {expected} from 0 up, got {raw[:40]!r}")
    return value


def _from_env(cls: type, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The fields of ``cls`` (those named in ``only``, if given) whose variables are set (and not
    empty), parsed."""
    values = {}
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        name = f.metadata.get("env")
        raw = os.environ.get(name) if name else None
        if raw not in (None, ""):
            values[f.name] = _parse(name, str(f.type).split(" | ")[0], raw)
    return values


def declared_variables() -> list[str]:
    """Every environment variable Descent reads, in declaration order."""
    return [f.metadata["env"] for cls in (Settings, Limits, Quotas) for f in fields(cls) if "env" in f.metadata]


def load_settings() -> Settings:
    """Read the environment; embedded defaults for anything unset. Raises ConfigError."""
    limits = Limits(**_from_env(Limits))
    settings = Settings(**_from_env(Settings), limits=limits, quotas=Quotas(**_from_env(Quotas)))
    for name, count in (("DESCENT_API_THREADS", settings.api_threads), ("DESCENT_MAX_WAITERS", settings.max_waiters),
                        ("DESCENT_BATCH_MAX", settings.batch_max), ("DESCENT_INLINE_ELEMENTS", settings.inline_elements)):
        if count < 1:
            raise ConfigError(f"{name} must be at least 1, got {count}")
    if settings.admission_processes < 0:
        raise ConfigError(f"DESCENT_ADMISSION_PROCESSES must be 0 or more, got {settings.admission_processes}")
    _check_database_timeouts(settings)
    if settings.batch_max > MAX_BATCH:
        raise ConfigError(f"DESCENT_BATCH_MAX must be at most {MAX_BATCH:,}, got {settings.batch_max}")
    for name, seconds in (("DESCENT_HISTORY_RETENTION_SECONDS", settings.history_retention),
                          ("DESCENT_JOB_RETENTION_SECONDS", settings.job_retention),
                          ("DESCENT_RETENTION_INTERVAL_SECONDS", settings.retention_interval)):
        if seconds is not None and seconds <= 0:
            raise ConfigError(f"{name} must be more than 0 seconds, got {seconds:g}"
                              + ("" if name.endswith("INTERVAL_SECONDS") else " (leave it unset to keep forever)"))
    data_dir = settings.data_dir.resolve()
    return replace(
        settings,
        data_dir=data_dir,
        database_url=normalise_database_url(settings.database_url or f"sqlite:///{data_dir / 'descent.db'}"),
        broker_url=settings.broker_url or f"sqla+sqlite:///{data_dir / 'broker.db'}",
        api_url=settings.api_url or f"http://127.0.0.1:{settings.port}",
        task_time_limit=settings.task_time_limit or limits.max_seconds + 400.0,
    )
