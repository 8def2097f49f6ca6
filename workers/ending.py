"""What every way of running jobs in a worker shares: retrying the store, a job's device, failing it.

``runner`` runs a message's jobs (alone, or through ``batch`` as one batch); both end jobs here.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Literal, TypeVar

import torch

from service.engine import EngineError
from service.errors import first_line
from service.store import JobStatus, StoreUnavailable
from service.store import jobs as job_store
from workers.state import WorkerState

log = logging.getLogger("workers.runner")
T = TypeVar("T")
# What a job's objective may raise while it runs (a shape, index or value that does not work out).
OBJECTIVE_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)
# What one delivery of a job did: the status it ended the job with, or why it ended none.
Outcome = JobStatus | Literal["skipped", "released", "lease_lost"]
# When no chunk was saved for this long (inside a long step of a lone job, or a long chunk of a
# batch), the runner asks the store whether its jobs were cancelled, renewing their leases on the way.
CANCEL_POLL_SECONDS = 1.0


def with_retries(fn: Callable[[], T], what: str, give_up_after: float = 300.0) -> T:
    """Call ``fn``, retrying with backoff while the database is unavailable."""
    delay, began = 0.2, time.monotonic()
    while True:
        try:
            return fn()
        except StoreUnavailable as exc:
            if time.monotonic() - began > give_up_after:
                raise
            log.warning("%s: database unavailable (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def checkpoint_interval(numel: int, lanes: int = 1) -> float:
    """Seconds between checkpoints: every chunk for small problems (a few hundred bytes each),
    up to every 10 s for a million parameters (megabytes each), and for a batch at least a
    millisecond per lane (each lane's checkpoint is serialised on its own). Rows written after the
    last checkpoint are redone on resume, so a longer interval costs recomputation, never steps."""
    return min(10.0, max(numel * lanes / 100_000, lanes / 1000))


def failure_message(exc: Exception) -> str:
    """What a job that failed with ``exc`` (an EngineError or one of OBJECTIVE_ERRORS) says."""
    if isinstance(exc, EngineError):
        return str(exc)
    return f"the objective could not be evaluated: {first_line(exc)}"


def job_device(job: Any, gpu_on_cpu: bool = False) -> str | None:
    """The torch device for a job of ``job``'s queue on this worker; None if it has none (a
    test worker told to serve the gpu queue without CUDA runs it on the CPU)."""
    if job.queue == "gpu":
        return "cuda" if torch.cuda.is_available() else ("cpu" if gpu_on_cpu else None)
    return "cpu"


NO_GPU = "this job needs a GPU, but the worker that took it has no CUDA device"


def fail_job(state: WorkerState, job_id: str, message: str) -> Outcome:
    """End the job failed with ``message`` (shown to its owner)."""
    log.info("job %s failed: %s", job_id, message)
    with_retries(lambda: job_store.finish_job(state.db, job_id, state.worker_id, JobStatus.FAILED, None, message),
                 f"fail {job_id}")
    return JobStatus.FAILED
