"""Running one job in a worker: claim it, run the engine, persist chunks, finish it.

A plain function (the Celery task is a thin wrapper) so it reads top-down and tests can call it.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Literal, TypeVar

import torch

from service.engine import Chunk, EngineError, StopReason, run
from service.errors import first_line
from service.jsonsafe import json_safe
from service.spec import SpecError, check_spec
from service.store import HistoryBatch, JobStatus, LeaseLost, StoreError, StoreUnavailable
from service.store import jobs as job_store
from service.store.history import save_chunk
from workers.state import WorkerState

log = logging.getLogger(__name__)
T = TypeVar("T")
# What one delivery of a job did: the status it ended the job with, or why it ended none.
Outcome = JobStatus | Literal["skipped", "released", "lease_lost"]
# Inside a long step, how often the runner asks the store whether the job was cancelled (and
# renews its lease on the way); the engine asks the runner at most every 0.5 s.
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


def checkpoint_interval(numel: int) -> float:
    """Seconds between checkpoints: every chunk for small problems (a few hundred bytes each),
    up to every 10 s for a million parameters (megabytes each). Rows written after the last
    checkpoint are redone on resume, so a longer interval costs recomputation, never steps."""
    return min(10.0, numel / 100_000)


def execute(state: WorkerState, job_id: str) -> Outcome:
    """Run the job if this worker can claim it; returns what happened, for logs and tests."""
    settings, db, me = state.settings, state.db, state.worker_id
    job = with_retries(lambda: job_store.claim_job(db, job_id, me, settings.lease_seconds, settings.max_attempts),
                       f"claim {job_id}")
    if job is None:
        return "skipped"
    state.current_job, state.current_since = job_id, time.monotonic()
    try:
        return _run_claimed(state, job)
    except LeaseLost:
        log.warning("job %s was taken from this worker (lease lost); dropping it", job_id)
        return "lease_lost"
    finally:
        state.current_job = None


def _run_claimed(state: WorkerState, job: Any) -> Outcome:
    settings, db, me, job_id = state.settings, state.db, state.worker_id, job.id
    try:
        checked = check_spec(job.spec, settings.limits, trace=False)
    except SpecError as exc:
        return _fail(state, job_id, f"the stored spec is no longer valid: {exc.message}")
    if job.queue == "gpu" and not torch.cuda.is_available():
        return _fail(state, job_id, "this job needs a GPU, but the worker that took it has no CUDA device")
    device = "cuda" if job.queue == "gpu" else "cpu"
    cancel = [False]
    last_renewed = [time.monotonic()]  # the claim, a chunk's save or a poll renewed the lease then
    final: list[HistoryBatch] = []

    def on_chunk(chunk: Chunk) -> None:
        batch = chunk.batch
        if chunk.final:
            final.append(batch)  # written with the result, in one transaction
            return
        requested = with_retries(
            lambda: save_chunk(db, job_id, me, batch, chunk.checkpoint, chunk.end, settings.lease_seconds),
            f"save history of {job_id}")
        cancel[0] = cancel[0] or requested
        last_renewed[0] = time.monotonic()

    def should_stop() -> StopReason | None:
        # Chunks are saved (and the lease renewed) every fraction of a second while steps are
        # short; inside a long step (the engine asks between evaluations) nothing is saved, so
        # poll the store: renew the lease and learn of a cancel. Raises LeaseLost.
        if not cancel[0] and time.monotonic() - last_renewed[0] >= CANCEL_POLL_SECONDS:
            last_renewed[0] = time.monotonic()
            try:
                cancel[0] = job_store.renew(db, job_id, me, settings.lease_seconds)
            except StoreUnavailable as exc:  # the next poll tries again; the fleet thread renews too
                log.warning("job %s: could not poll for a cancel (%s)", job_id, exc)
        if cancel[0]:
            return StopReason.CANCELLED  # before a hand-back: a cancelled job is not resumed
        if state.shutting_down.is_set():
            return StopReason.INTERRUPTED
        return None

    try:
        result = run(checked, device=device, on_chunk=on_chunk, should_stop=should_stop, resume=job.checkpoint,
                     time_limit=settings.limits.max_seconds, checkpoint_seconds=checkpoint_interval(checked.numel))
    except StoreError:
        raise  # the store's own failures (LeaseLost, an outage past the retries) are not the job's
    except EngineError as exc:
        return _fail(state, job_id, str(exc))
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        return _fail(state, job_id, f"the objective could not be evaluated: {first_line(exc)}")

    if result.stop_reason == StopReason.INTERRUPTED:
        with_retries(lambda: job_store.release_job(db, job_id, me), f"release {job_id}")
        if state.dispatcher is not None:
            state.dispatcher.send(job_id, job.queue)  # its own queue, whatever this worker consumes
        return "released"
    payload = json_safe({**result.as_json(), "worker": me})
    # A run that ended on its own (steps, grad_norm, ...) after a cancel was requested still ends
    # the job cancelled: a job whose cancel was requested never succeeds.
    cancelled = result.stop_reason == StopReason.CANCELLED or cancel[0]
    status = JobStatus.CANCELLED if cancelled else JobStatus.SUCCEEDED
    with_retries(lambda: job_store.finish_job(db, job_id, me, status, payload, None, final), f"finish {job_id}")
    return status


def _fail(state: WorkerState, job_id: str, message: str) -> Outcome:
    log.info("job %s failed: %s", job_id, message)
    with_retries(lambda: job_store.finish_job(state.db, job_id, state.worker_id, JobStatus.FAILED, None, message),
                 f"fail {job_id}")
    return JobStatus.FAILED
