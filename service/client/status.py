"""A job's status and why its run ended, as the client and the CLI read them: the same strings as
the service's ``service.status`` (the client imports nothing of the service; a test holds the two
equal), and the outcome a person reads."""
from __future__ import annotations

from enum import StrEnum
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED: frozenset[str] = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
UNFINISHED: tuple[str, ...] = (Status.QUEUED, Status.RUNNING)


class StopReason(StrEnum):
    STEPS = "steps"
    GRAD_NORM = "grad_norm"
    TIME_LIMIT = "time_limit"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


def outcome(job: dict[str, Any]) -> str:
    """The job's status, except that a run that "succeeded" by stopping on divergence reads
    "diverged"."""
    status = str(job["status"])
    stopped = (job.get("result") or {}).get("stop_reason")
    return StopReason.DIVERGED.value if status == Status.SUCCEEDED and stopped == StopReason.DIVERGED else status
