"""A job's status and why its run ended: the one type for each that the engine, the store, the
workers, the API, the client and the CLI use (enums only: the client may import it). Values are
the strings stored and shown over HTTP; a ``StrEnum`` compares equal to them.

queued -> running -> succeeded | failed | cancelled.
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


class StopReason(StrEnum):
    """Why a run ended. "interrupted": the run was asked to hand back, and resumes later from the
    checkpoint it wrote; every other reason ends the job."""

    STEPS = "steps"
    GRAD_NORM = "grad_norm"
    TIME_LIMIT = "time_limit"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


# The stop reasons a finished job can have (a hand-back is never an ending).
ENDINGS: tuple[str, ...] = tuple(reason.value for reason in StopReason if reason != StopReason.INTERRUPTED)

# Why a queued job of the gpu queue waits while no GPU worker heartbeats (and, after
# DESCENT_GPU_WAIT_SECONDS, why it failed).
WAITING_FOR_GPU = "waiting for a GPU worker"
