"""A job's status: the one type every layer uses for it (store, API, CLI, tests, benchmarks).

queued -> running -> succeeded | failed | cancelled. Values are the strings stored in the
``jobs.status`` column and shown over HTTP; a ``StrEnum`` compares equal to them.
"""
from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """A finished job never changes status again."""
        return self in FINISHED


FINISHED: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
