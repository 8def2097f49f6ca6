"""Why a run ended, or why a job waits: one word per reason for the engine, the workers and the
API (no torch here)."""
from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    """Why a run ended. ``INTERRUPTED`` means the caller asked the run to hand back (it is
    resumed later from the checkpoint it wrote); every other reason ends the job."""

    STEPS = "steps"
    GRAD_NORM = "grad_norm"
    TIME_LIMIT = "time_limit"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


# Why a queued job of the gpu queue waits while no GPU worker heartbeats (and, after
# DESCENT_GPU_WAIT_SECONDS, why it failed).
WAITING_FOR_GPU = "waiting for a GPU worker"
