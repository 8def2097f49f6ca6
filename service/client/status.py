"""A job's status and why its run ended, as the client and the CLI read them: the service's own
words (``service.status``, a leaf of enums the client may import), and the outcome a person reads."""
from __future__ import annotations

from typing import Any

from service.status import ENDINGS, StopReason
from service.status import FINISHED as _FINISHED
from service.status import JobStatus as Status

__all__ = ["ENDINGS", "FINISHED", "UNFINISHED", "Status", "StopReason", "outcome"]

FINISHED: frozenset[str] = frozenset(status.value for status in _FINISHED)
UNFINISHED: tuple[str, ...] = tuple(status.value for status in Status if status not in _FINISHED)


def outcome(job: dict[str, Any]) -> str:
    """The job's status, except that a run that "succeeded" by stopping on divergence reads
    "diverged"."""
    status = str(job["status"])
    stopped = (job.get("result") or {}).get("stop_reason")
    return StopReason.DIVERGED.value if status == Status.SUCCEEDED and stopped == StopReason.DIVERGED else status
