"""What every way of running jobs in a worker shares: retrying the store, a job's device, failing it.

``runner`` runs a message's jobs (alone, or through ``batch`` as one batch); both end jobs here.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Literal, Sequence, TypeVar

import numpy as np
import torch

from service.batch import HistoryBatch
from service.engine import EngineError, Result
from service.jsonsafe import json_safe
from service.errors import first_line
from service.store import JobStatus, StoreUnavailable
from service.store import jobs as job_store
from service.store import tensors as job_tensors
from service.store.db import sqlstate
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


# Seconds a worker retries the store through an outage before it gives up on what it was doing
# (then a job it holds is handed back without its attempt counted: ``runner``).
STORE_PATIENCE = 300.0


# Database states that a job's own statements can cause again and again (one past the statement
# timeout, the server out of memory on it, a program limit such as a row too big): such a fault is
# charged to the job like a crash, so its attempts run out rather than it being handed back forever.
_JOB_CAUSED_STATES = ("57014", "53200")


def infrastructure_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the infrastructure's fault, never the job's: the database unavailable,
    read-only (a failover in progress) or a row locked past the lock timeout, or the broker
    unreachable. A job that meets one keeps its attempt; one its own statements may cause
    (``_JOB_CAUSED_STATES``, class 54) counts as its crash."""
    state = sqlstate(exc)
    if state in _JOB_CAUSED_STATES or state[:2] == "54":
        return False
    if isinstance(exc, StoreUnavailable):
        return True
    import psycopg
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    driver = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(driver, psycopg.Error):
        return isinstance(driver, (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction))
    if isinstance(exc, DBAPIError):
        return False
    try:
        from kombu.exceptions import OperationalError as BrokerError
        from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout
    except ImportError:  # pragma: no cover - both ship with celery[redis]
        return False
    return isinstance(exc, (BrokerError, RedisConnectionError, RedisTimeout))


def with_retries(fn: Callable[[], T], what: str, give_up_after: float | None = None) -> T:
    """Call ``fn``, retrying with backoff while the database is unavailable (or read-only), for up
    to ``give_up_after`` seconds (``STORE_PATIENCE``); then the last error is raised."""
    delay, began = 0.2, time.monotonic()
    patience = STORE_PATIENCE if give_up_after is None else give_up_after
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - only the infrastructure's faults are retried
            if not infrastructure_fault(exc) or time.monotonic() - began > patience:
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


def wrote(before: job_store.Written, batch: HistoryBatch, checkpointed: bool, end: int) -> job_store.Written:
    """What a worker believes it has stored of a job once a chunk of ``batch`` (with a checkpoint
    at ``end`` when ``checkpointed``) committed, after ``before``."""
    return job_store.Written(int(batch.steps[-1]) if len(batch) else before.last_step,
                             end if checkpointed else before.checkpoint_step)


def hand_back(state: WorkerState, jobs: Sequence[Any]) -> set[str]:
    """Release ``jobs`` (records of jobs this worker holds) to the queue without counting their
    attempts, and send them on (a message per job, or per batch of one batch key); returns the ids
    released (a job no longer held is not). Raises what the store raises past ``with_retries``."""
    by_id = {job.id: job for job in jobs}
    released = with_retries(lambda: job_store.release_jobs(state.db, list(by_id), state.worker_id),
                            f"hand back {len(by_id)} job(s)")
    if released and state.dispatcher is not None:
        from service.queue import messages_for

        for message in messages_for([(i, by_id[i].queue, by_id[i].batch_key) for i in by_id if i in released],
                                    state.settings.batch_max):
            state.dispatcher.send_message(message)  # a broker that fails it leaves them to the reconciler
    return released


def stored_result(state: WorkerState, result: Result) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A result as this worker stores it: JSON-safe, naming the worker, with an x or grad of more
    than ``DESCENT_INLINE_ELEMENTS`` elements summarised, its values to keep in binary."""
    payload = {**result.as_json(tensors=False), "worker": state.worker_id}
    stored, binary = job_tensors.split_result(payload, {"x": result.x, "grad": result.grad},
                                              state.settings.inline_elements)
    return json_safe(stored), binary


def fail_job(state: WorkerState, job_id: str, message: str) -> Outcome:
    """End the job failed with ``message`` (shown to its owner)."""
    log.info("job %s failed: %s", job_id, message)
    with_retries(lambda: job_store.finish_job(state.db, job_id, state.worker_id, JobStatus.FAILED, None, message),
                 f"fail {job_id}")
    return JobStatus.FAILED
