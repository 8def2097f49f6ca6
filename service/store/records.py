"""Frozen records the store hands out, never live ORM rows."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.status import JobStatus


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    status: JobStatus
    spec: dict[str, Any]
    shape: list[int]
    queue: str
    name: str | None
    tags: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    attempts: int
    cancel_requested: bool
    result: dict[str, Any] | None
    error: str | None
    checkpoint: bytes | None = None
    checkpoint_step: int | None = None
    batch_key: str | None = None
    progress: dict[str, Any] | None = None
    lease_expires_at: datetime | None = None  # a running job is reclaimed once this has passed
    worker_seen_at: datetime | None = None  # a running job's worker's last heartbeat, when read
    history_dropped_at: datetime | None = None  # the history retention dropped its history then
    sweep_id: str | None = None  # a sweep's job: the sweep, and the job's place in it
    sweep_index: int | None = None

    @property
    def finished(self) -> bool:
        return self.status.is_finished


@dataclass(frozen=True)
class SweepRecord:
    """A sweep: its request as kept (``grid`` as [key, values] pairs, in order) and its owner."""

    id: str
    owner: str
    name: str | None
    tags: dict[str, str]
    base: dict[str, Any]
    grid: list[Any]
    starts: dict[str, Any]
    n_starts: int
    jobs: int
    tolerance: float
    created_at: datetime


@dataclass(frozen=True)
class TokenRecord:
    """A token as listed: never its secret text, nor its hash."""

    id: str
    owner: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class WorkerRecord:
    """A worker as the fleet view shows it: ``alive``, lost since ``lost_since`` (its last
    heartbeat plus the missed heartbeats that make it lost), or stopped since ``stopped_at`` (it
    left cleanly)."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    device: str
    started_at: datetime
    last_heartbeat: datetime
    current_job: str | None
    alive: bool
    lost_since: datetime | None = None
    device_name: str | None = None
    cuda_memory: int | None = None
    versions: dict[str, str] | None = None
    jobs_done: int = 0
    stopped_at: datetime | None = None

    @property
    def state(self) -> str:
        """alive, lost or stopped: what the workers view shows."""
        return "alive" if self.alive else "stopped" if self.stopped_at is not None else "lost"
