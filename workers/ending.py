"""Ending a job, however a worker ran it: its result as stored, failed, or handed back.

``runner`` runs a message's jobs (alone, or through ``batch`` as one batch); both end jobs here,
place them with ``devices`` and pace them with ``pacing``. Outages of the store are told apart
and ridden out in ``outages``.
"""
from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import numpy as np

from service.rows import HistoryRows
from service.engine import EngineError, Result
from service.jsonsafe import json_safe
from service.errors import first_line
from service.store import JobStatus
from service.store import jobs as job_store
from service.store import tensors as job_tensors
from workers.outages import with_retries
from workers.state import WorkerState

log = logging.getLogger("workers.runner")
# What a job's objective may raise while it runs (a shape, index or value that does not work out).
OBJECTIVE_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)
# What one delivery of a job did: the status it ended the job with, or why it ended none.
Outcome = JobStatus | Literal["skipped", "released", "lease_lost"]


def failure_message(exc: Exception) -> str:
    """What a job that failed with ``exc`` (an EngineError or one of OBJECTIVE_ERRORS) says."""
    if isinstance(exc, EngineError):
        return str(exc)
    return f"the objective could not be evaluated: {first_line(exc)}"


def wrote(before: job_store.Written, rows: HistoryRows, checkpointed: bool, end: int) -> job_store.Written:
    """What a worker believes it has stored of a job once a chunk of ``rows`` (with a checkpoint
    at ``end`` when ``checkpointed``) committed, after ``before``."""
    return job_store.Written(int(rows.steps[-1]) if len(rows) else before.last_step,
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
