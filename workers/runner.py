"""Running what a task message names in a worker: claim its job (with compatible queued jobs,
as a batch: ``workers.batch``), run the engine, persist chunks, finish the jobs.

Plain functions (the Celery tasks are thin wrappers) so it reads top-down and tests can call it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from service.engine import Chunk, EngineError, StopReason, run
from service.logs import job_logging
from service.queue import Message
from service.spec import SpecError, check_spec
from service.store import HistoryRows, JobStatus, LeaseLost, StoreError
from service.store import jobs as job_store
from service.store.batches import claim_batch, queued_among
from service.store.history import save_chunk
from service.store.records import JobRecord
from workers import pacing
from workers.batch import run_batch_of
from workers.devices import NO_GPU, job_device
from workers.ending import OBJECTIVE_ERRORS, Outcome, fail_job, failure_message, hand_back, stored_result, wrote
from workers.outages import infrastructure_fault, with_retries
from workers.pacing import CANCEL_POLL_SECONDS, checkpoint_interval
from workers.state import WorkerState

log = logging.getLogger(__name__)


def execute(state: WorkerState, job_id: str) -> Outcome:
    """Run the job if this worker can claim it (with the compatible queued jobs claimed with it,
    when batching is on); returns what happened to it, for logs and tests."""
    return execute_message(state, [job_id])[job_id]


def execute_message(state: WorkerState, job_ids: list[str]) -> dict[str, Outcome]:
    """Run what one task message names: its first claimable job, and with it, while the batch has
    room (``DESCENT_BATCH_MAX``), the compatible queued jobs, the message's own first. The
    message's jobs the batch has no room for are sent on in a message of their own at once, so
    another worker can take them. Returns each named or claimed job's outcome."""
    if not job_ids:
        return {}
    with job_logging(job_ids):
        return _execute_message(state, job_ids)


def _execute_message(state: WorkerState, job_ids: list[str]) -> dict[str, Outcome]:
    settings, db, me = state.settings, state.db, state.worker_id
    claimed = with_retries(lambda: claim_batch(db, job_ids, me, settings.lease_seconds, settings.max_attempts,
                                               settings.batch_max, settings.limits.max_elements, state.solo_keys),
                           f"claim {job_ids[0]}")
    outcomes: dict[str, Outcome] = dict.fromkeys(job_ids, "skipped")
    if not claimed:
        return outcomes
    taken = {job.id for job in claimed}
    state.current_job, state.current_jobs, state.current_since = claimed[0].id, sorted(taken), time.monotonic()
    try:
        rest = [job_id for job_id in job_ids if job_id not in taken]
        if rest and state.dispatcher is not None:
            waiting = with_retries(lambda: queued_among(db, rest), "find unclaimed jobs")
            if waiting:
                state.dispatcher.send_message(Message(waiting, claimed[0].queue))
        alone = claimed
        if len(claimed) > 1:
            with job_logging([job.id for job in claimed]):
                batch_outcomes, alone = run_batch_of(state, claimed)
            outcomes.update(batch_outcomes)
        for job in alone:
            with job_logging([job.id]):
                outcomes[job.id] = run_alone(state, job)
    except Exception as exc:
        if not infrastructure_fault(exc):
            raise
        # The database (or broker) failed us past the retries: not the jobs' fault. Hand back the
        # jobs still held, their attempts given back; if even that cannot be written, the
        # heartbeat thread keeps their leases and hands them back once the database answers, and
        # the task keeps its message (``workers.tasks``).
        unfinished = [job for job in claimed if outcomes.get(job.id) in (None, "skipped")]
        released = _hand_back_on_fault(state, unfinished, exc)
        outcomes.update(dict.fromkeys(released, "released"))
        if len(released) < len(unfinished):
            raise
    finally:
        state.current_job, state.current_jobs = None, []
    return outcomes


def _hand_back_on_fault(state: WorkerState, jobs: list[JobRecord], exc: Exception) -> set[str]:
    """Release ``jobs`` (held by this worker, their run stopped by an infrastructure fault) without
    counting their attempts, and send them on; returns the ids released. Those it could not
    release are left to the heartbeat thread (``state.handback``)."""
    log.warning("%d job(s) stopped by an infrastructure fault (%s); handing them back, attempts not counted",
                len(jobs), exc)
    if not jobs:
        return set()
    try:
        released = hand_back(state, jobs)
    except Exception as again:  # noqa: BLE001 - still down: the heartbeat thread tries on
        if not infrastructure_fault(again):
            raise
        state.handback.update(job.id for job in jobs)
        return set()
    return released


def run_alone(state: WorkerState, job: Any) -> Outcome:
    """Run one claimed job by itself."""
    state.current_job, state.current_since = job.id, time.monotonic()
    log.info("job %s started (attempt %d, from step %s)", job.id, job.attempts, job.checkpoint_step or 0)
    try:
        outcome = _run_claimed(state, job)
        log.info("job %s %s in %.3f s", job.id, outcome, time.monotonic() - state.current_since)
        return outcome
    except LeaseLost:
        if job.id in state.behind:
            log.warning("job %s: the stored history is behind what this worker wrote (the database lost a "
                        "commit); handing it back to resume from what is stored", job.id)
            return "released" if job.id in hand_back(state, [job]) else "lease_lost"
        log.warning("job %s was taken from this worker (lease lost); dropping it", job.id)
        return "lease_lost"
    finally:
        state.behind.discard(job.id)


def _run_claimed(state: WorkerState, job: Any) -> Outcome:
    """Run the claimed job; every renewal (a chunk's save, a poll) and its finish are fenced on the
    stored history reaching what this run wrote (``jobs.believing``)."""
    written = {job.id: job_store.Written(None, job.checkpoint_step)}
    with job_store.believing(written) as behind:
        try:
            return _run_believing(state, job, written)
        finally:
            state.behind.update(behind)


def _run_believing(state: WorkerState, job: Any, written: dict[str, job_store.Written]) -> Outcome:
    settings, db, me, job_id = state.settings, state.db, state.worker_id, job.id
    try:
        checked = check_spec(job.spec, settings.limits, trace=False)
    except SpecError as exc:
        return fail_job(state, job_id, f"the stored spec is no longer valid: {exc.message}")
    device = job_device(job, settings.gpu_on_cpu)
    if device is None:
        return fail_job(state, job_id, NO_GPU)
    cancel = [False]
    last_renewed = [time.monotonic()]  # the claim, a chunk's save or a poll renewed the lease then
    final: list[HistoryRows] = []

    def on_chunk(chunk: Chunk) -> None:
        rows = chunk.rows
        if chunk.final:
            final.append(rows)  # written with the result, in one transaction
            return
        requested = with_retries(
            lambda: save_chunk(db, job_id, me, rows, chunk.checkpoint, chunk.end, settings.lease_seconds,
                               chunk.progress),
            f"save history of {job_id}")
        written[job_id] = wrote(written[job_id], rows, chunk.checkpoint is not None, chunk.end)
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
            except Exception as exc:  # noqa: BLE001 - an outage: the next poll tries again, the fleet thread renews too
                if not infrastructure_fault(exc):
                    raise
                log.warning("job %s: could not poll for a cancel (%s)", job_id, exc)
        if cancel[0]:
            return StopReason.CANCELLED  # before a hand-back: a cancelled job is not resumed
        if state.shutting_down.is_set():
            return StopReason.INTERRUPTED
        return None

    try:
        result = run(checked, device=device, on_chunk=on_chunk, should_stop=should_stop, resume=job.checkpoint,
                     time_limit=settings.limits.max_seconds,
                     chunking=replace(pacing.CHUNKING, checkpoint_seconds=checkpoint_interval(checked.numel)))
    except StoreError:
        raise  # the store's own failures (LeaseLost, an outage past the retries) are not the job's
    except (EngineError, *OBJECTIVE_ERRORS) as exc:
        if infrastructure_fault(exc):
            raise
        return fail_job(state, job_id, failure_message(exc))

    if result.stop_reason == StopReason.INTERRUPTED:
        with_retries(lambda: job_store.release_job(db, job_id, me), f"release {job_id}")
        if state.dispatcher is not None:
            state.dispatcher.send(job_id, job.queue)  # its own queue, whatever this worker consumes
        return "released"
    payload, tensors = stored_result(state, result)
    # A run that ended on its own (steps, grad_norm, ...) after a cancel was requested still ends
    # the job cancelled: a job whose cancel was requested never succeeds.
    cancelled = result.stop_reason == StopReason.CANCELLED or cancel[0]
    status = JobStatus.CANCELLED if cancelled else JobStatus.SUCCEEDED
    with_retries(lambda: job_store.finish_job(db, job_id, me, status, payload, None, final, tensors),
                 f"finish {job_id}")
    return status
