"""Backends for tests and benchmarks: embedded settings under a folder, fresh PostgreSQL
databases, a Redis database of one's own, and the environment that hands settings to a child."""
from __future__ import annotations

import os
import random
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterator

from service.config import Settings, load_settings


class PostgresUnreachable(RuntimeError):
    pass


PG_ADMIN_URL = os.environ.get("DESCENT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DESCENT_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Embedded settings (SQLite + SQL broker) under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        os.environ["DESCENT_DATA_DIR"] = str(data_dir)
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return replace(settings, **overrides)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make a child process load the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    env.update({
        "DESCENT_DATA_DIR": str(settings.data_dir),
        "DESCENT_DATABASE_URL": settings.database_url,
        "DESCENT_BROKER_URL": settings.broker_url,
        "DESCENT_LEASE_SECONDS": str(settings.lease_seconds),
        "DESCENT_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "DESCENT_MAX_ATTEMPTS": str(settings.max_attempts),
        "DESCENT_REQUEUE_AFTER": str(settings.requeue_after),
        "DESCENT_API_THREADS": str(settings.api_threads),
        "DESCENT_MAX_WAITERS": str(settings.max_waiters),
        "DESCENT_BATCH_MAX": str(settings.batch_max),
        "DESCENT_TORCH_THREADS": str(settings.torch_threads),
        "DESCENT_LOG_FORMAT": settings.log_format,
        "DESCENT_WORKER_LOST_AFTER": str(settings.worker_lost_after),
        "DESCENT_GPU_WAIT_SECONDS": str(settings.gpu_wait_seconds),
        "DESCENT_GPU_WITHOUT_CUDA": settings.gpu_without_cuda,
    })
    for name, value in (("DESCENT_AUTH", settings.auth), ("DESCENT_ALLOWED_HOSTS", settings.allowed_hosts),
                        ("DESCENT_ALLOWED_ORIGINS", settings.allowed_origins)):
        if value:
            env[name] = value
    for name, retention in (("DESCENT_HISTORY_RETENTION_SECONDS", settings.history_retention),
                            ("DESCENT_JOB_RETENTION_SECONDS", settings.job_retention)):
        if retention is not None:
            env[name] = str(retention)
    env["DESCENT_RETENTION_INTERVAL_SECONDS"] = str(settings.retention_interval)
    for group in (settings.limits, settings.quotas):
        for f in fields(group):
            if "env" in f.metadata:
                env[f.metadata["env"]] = str(getattr(group, f.name))
    return env


def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; PostgresUnreachable without a server."""
    import sqlalchemy as sa

    from service.config import normalise_database_url

    admin = sa.create_engine(normalise_database_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 5})
    name = f"descent_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = admin.connect()
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise PostgresUnreachable(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (DESCENT_TEST_PG_URL): "
                                  f"{str(exc.orig).strip()[:200]}") from None
    with conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = normalise_database_url(PG_ADMIN_URL).rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
                {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def migrated(url: str | None = None) -> Iterator[Any]:
    """A migrated Database at ``url``, or on a fresh PostgreSQL database when None; disposed after."""
    from service.store import Database
    from service.store.migrate import upgrade

    pg = pg_database() if url is None else None
    database = Database(next(pg) if pg is not None else url)
    upgrade(database)
    try:
        yield database
    finally:
        database.engine.dispose()
        if pg is not None:
            pg.close()


def redis_url_for_test(base: str = REDIS_URL) -> str:
    """A Redis database index of its own (1-15), flushed, so runs never see each other's tasks."""
    import redis

    index = random.randint(1, 15)
    url = f"{base.rstrip('/')}/{index}"
    redis.Redis.from_url(url).flushdb()
    return url
