"""Every setting Descent reads from the environment, in one place.

With neither ``DESCENT_DATABASE_URL`` nor ``DESCENT_BROKER_URL`` set, Descent runs *embedded*:
SQLite and a SQL-backed Celery broker under ``DESCENT_DATA_DIR``, no server processes needed.
Settings are read when ``load_settings()`` is called, never at import time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Ceilings on what one job spec may ask for; a spec over one is refused naming it."""

    max_elements: int = 1_000_000
    max_steps: int = 1_000_000
    max_recorded_values: int = 100_000_000
    max_expression_chars: int = 2_000
    max_expression_nodes: int = 500
    max_expression_depth: int = 50
    max_constant: float = 1e12
    max_exponent: float = 1_000.0
    max_seconds: float = 3_600.0
    max_tags: int = 32
    max_body_bytes: int = 32 * 1024 * 1024


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _limits_from_env() -> Limits:
    base = Limits()
    return Limits(
        max_elements=_env_int("DESCENT_MAX_ELEMENTS", base.max_elements),
        max_steps=_env_int("DESCENT_MAX_STEPS", base.max_steps),
        max_recorded_values=_env_int("DESCENT_MAX_RECORDED_VALUES", base.max_recorded_values),
        max_expression_chars=_env_int("DESCENT_MAX_EXPRESSION_CHARS", base.max_expression_chars),
        max_seconds=_env_float("DESCENT_MAX_SECONDS", base.max_seconds),
        max_body_bytes=_env_int("DESCENT_MAX_BODY_BYTES", base.max_body_bytes),
    )


def normalise_database_url(url: str) -> str:
    """Map a plain ``postgresql://`` URL to the psycopg 3 driver that Descent installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one process."""

    database_url: str
    broker_url: str
    data_dir: Path
    port: int = 8000
    host: str = "127.0.0.1"
    api_url: str = "http://127.0.0.1:8000"
    embedded_broker: bool = True
    history_chunk_rows: int = 1_000
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3
    requeue_after: float = 30.0
    task_time_limit: float = 4_000.0
    torch_threads: int = 1
    limits: Limits = field(default_factory=Limits)


def load_settings() -> Settings:
    """Read the environment; embedded defaults for anything unset."""
    data_dir = Path(os.environ.get("DESCENT_DATA_DIR") or Path.cwd() / ".descent").resolve()
    db = os.environ.get("DESCENT_DATABASE_URL") or f"sqlite:///{data_dir / 'descent.db'}"
    broker = os.environ.get("DESCENT_BROKER_URL") or f"sqla+sqlite:///{data_dir / 'broker.db'}"
    port = _env_int("DESCENT_PORT", 8000)
    limits = _limits_from_env()
    return Settings(
        database_url=normalise_database_url(db),
        broker_url=broker,
        data_dir=data_dir,
        port=port,
        host=os.environ.get("DESCENT_HOST", "127.0.0.1"),
        api_url=os.environ.get("DESCENT_URL", f"http://127.0.0.1:{port}"),
        embedded_broker=broker.startswith("sqla+"),
        history_chunk_rows=_env_int("DESCENT_HISTORY_CHUNK_ROWS", 1_000),
        lease_seconds=_env_float("DESCENT_LEASE_SECONDS", 30.0),
        heartbeat_seconds=_env_float("DESCENT_HEARTBEAT_SECONDS", 5.0),
        max_attempts=_env_int("DESCENT_MAX_ATTEMPTS", 3),
        requeue_after=_env_float("DESCENT_REQUEUE_AFTER", 30.0),
        task_time_limit=_env_float("DESCENT_TASK_TIME_LIMIT", limits.max_seconds + 400.0),
        torch_threads=_env_int("DESCENT_TORCH_THREADS", 1),
        limits=limits,
    )
