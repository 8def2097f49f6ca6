"""A worker's background duties, each on a thread of its own: the heartbeat into the database
(fleet view, routing) with the lease renewal of the jobs it runs, on a connection of its own; the
reconciler that re-sends jobs the broker lost, reclaims jobs of lost workers and prunes the fleet;
and (``workers.retention``) the retention clean-up. The heartbeat never calls the broker and never
waits behind the reconciler, so a worker is shown lost only when it stops beating itself."""
from __future__ import annotations

import logging
import functools
import importlib.metadata
import os
import platform
import random
import threading
import time

from service.logs import job_logging
from service.queue import QUEUES, messages_for, purge_consumed, waiting_messages
from service.status import WAITING_FOR_GPU
from service.store import Database, StoreError, StoreUnavailable
from service.store import fleet as fleet_store
from service.store import jobs as job_store
from workers import retention
from workers.state import WorkerState, get_state

log = logging.getLogger(__name__)
_stop = threading.Event()
# Job ids named on one log line at most: a reconciler pass that re-sends or fails more writes
# more lines, so every id is on some line (``job_ids`` in JSON) and no line grows without bound.
LOG_IDS_PER_LINE = 50


def reconcile_once(requeue_after: float, state: WorkerState | None = None) -> list[str]:
    """Re-send queued jobs that waited too long (their message may be gone: broker restart,
    FLUSHALL) and requeue running jobs whose lease expired (their worker died). Each job is
    re-sent by one worker only: the database row is bumped conditionally first. Jobs of one batch
    key go in shared messages, as a sweep's do (a dead worker's batch resumes as a batch).

    Duplicate messages are kept few: a queue is re-sent only the jobs of the messages it lacks
    (its queued jobs counted in messages, as they are sent: one per job, or per batch of one batch
    key; those unsent longest first), so it never holds more messages than its jobs need;
    behind a backlog (its queue still holds messages) a job is re-sent only after
    ``BACKLOG_PATIENCE`` times as long; a gpu job is not re-sent while no GPU worker
    heartbeats (it keeps its one message), and once none has heartbeat for
    DESCENT_GPU_WAIT_SECONDS (a stopped one's last heartbeat counts: a restart is no absence),
    gpu jobs queued longer than that fail, saying why. Each line it logs names its jobs.

    A job whose row is locked (its worker frozen or cut off inside a write) is skipped, never
    waited for, and reclaimed by a later pass once the lock goes; for a lease after this worker's
    own heartbeat failed to reach the database, no lapsed lease is reclaimed (``reclaiming``)."""
    state = state or get_state()
    settings = state.settings
    unserved = [] if fleet_store.live_gpu_worker(state.db, settings.worker_lost_seconds) \
        else ["gpu"]
    if unserved and not fleet_store.gpu_worker_seen(state.db, settings.gpu_wait_seconds):
        failed = job_store.fail_unserved(state.db, "gpu", settings.gpu_wait_seconds,
                                         f"{WAITING_FOR_GPU}: none came within {settings.gpu_wait_seconds:g} s "
                                         "(DESCENT_GPU_WAIT_SECONDS)", source=state.worker_id)
        for ids in _chunks(failed):
            with job_logging(ids):
                log.warning("failed %d gpu job(s) that waited over %g s for a GPU worker", len(ids),
                            settings.gpu_wait_seconds)
    # Counted before the jobs are: a message taken meanwhile then errs towards fewer re-sends.
    waiting = {queue: _waiting(state, queue) for queue in QUEUES}
    reclaim = reclaiming(state)
    stale = [job for job in job_store.stale_jobs(state.db, requeue_after, waiting, unserved=unserved,
                                                 batch_max=settings.batch_max)
             if job_store.requeue_if_stale(state.db, job[0], requeue_after, source=state.worker_id, reclaim=reclaim)]
    sent: list[str] = []
    if state.dispatcher is not None:
        for message in messages_for(stale, state.settings.batch_max):
            if state.dispatcher.send_message(message):
                sent.extend(message.job_ids)
    for ids in _chunks(sent):
        with job_logging(ids):
            log.info("reconciler re-sent %d job(s)", len(ids))
    return sent


def _chunks(job_ids: list[str]) -> list[list[str]]:
    """``job_ids`` in runs of ``LOG_IDS_PER_LINE``, one log line each."""
    return [job_ids[i:i + LOG_IDS_PER_LINE] for i in range(0, len(job_ids), LOG_IDS_PER_LINE)]


def _waiting(state: WorkerState, queue: str) -> int | None:
    """Messages waiting in ``queue`` (not yet delivered); None when there is no broker to ask
    or it cannot say."""
    if state.dispatcher is None:
        return None
    try:
        return waiting_messages(state.dispatcher.celery, queue)
    except Exception as exc:  # noqa: BLE001 - a broker that cannot answer cannot take a re-send either
        log.warning("could not count the messages waiting in %s: %s", queue, exc)
        return None


def _beating(state: WorkerState, stop: threading.Event, db: Database) -> None:
    """The heartbeat thread: every heartbeat, this worker's row and its jobs' leases (and the
    hand-back of jobs it gave up on in an outage), on a connection of its own (``db``), and nothing
    else: no broker call and no reconciler query can hold it up, so a worker is shown lost only
    when it stops beating itself."""
    settings = state.settings
    try:
        while not stop.wait(settings.heartbeat_seconds * (0.8 + 0.4 * random.random())):
            _enforce_hard_limit(state)
            try:
                beat_once(state, db)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad beat
                if isinstance(exc, StoreUnavailable):  # the database failed it, as it may have failed the others'
                    state.store_fault_at = time.monotonic()
                if isinstance(exc, StoreError):
                    log.warning("fleet heartbeat failed: %s", exc)
                else:
                    log.exception("fleet heartbeat failed")
    finally:
        db.engine.dispose()


def beat_once(state: WorkerState, db: Database | None = None) -> None:
    """One heartbeat: this worker's row, then the leases of the jobs it holds (those no longer held
    are simply not renewed), then the jobs it gave up on in an outage handed back, attempts not
    counted (``state.handback``)."""
    db = db or state.db
    settings = state.settings
    fleet_store.heartbeat(db, describe(state))
    handback = set(state.handback)
    held = set(state.current_jobs or ([state.current_job] if state.current_job else [])) | handback
    if held:
        # Rows held by this worker's own chunk or finish are being renewed by it: never wait on them.
        job_store.renew_jobs(db, sorted(held), state.worker_id, settings.lease_seconds, skip_locked=True)
    if handback:
        released = job_store.release_jobs(db, sorted(handback), state.worker_id)
        state.handback.difference_update(handback)  # released, or no longer this worker's
        if released:
            with job_logging(sorted(released)):
                log.info("handed back %d job(s) this worker gave up on in an outage; the reconciler re-sends "
                         "them", len(released))


def _reconciling(state: WorkerState, stop: threading.Event) -> None:
    """The reconciler thread: re-sends and reclaims (``reconcile_once``), prunes the fleet's rows
    and purges consumed messages, every third of DESCENT_REQUEUE_AFTER. It may wait on the broker
    or the database; the heartbeat never waits for it."""
    settings = state.settings
    interval, wait = settings.requeue_after / 3, min(settings.heartbeat_seconds, settings.requeue_after / 3)
    while not stop.wait(wait):
        wait = interval * (0.8 + 0.4 * random.random())
        try:
            reconcile_once(settings.requeue_after, state)
            fleet_store.prune_workers(state.db, settings.worker_retention, settings.worker_lost_seconds)
            if state.dispatcher is not None:
                purge_consumed(state.dispatcher.celery)
        except StoreError as exc:
            log.warning("fleet reconciler failed: %s", exc)
        except Exception:  # noqa: BLE001 - the background thread must outlive one bad pass
            log.exception("fleet reconciler failed")


def reclaiming(state: WorkerState) -> bool:
    """Whether this worker may reclaim jobs whose lease lapsed: not for a lease after its own
    heartbeat last failed to reach the database (an outage, a read-only failover): the holders'
    leases may have lapsed for that very outage, and they get a lease to renew them first."""
    fault = state.store_fault_at
    return fault is None or time.monotonic() - fault > state.settings.lease_seconds


def start_threads(state: WorkerState, stop: threading.Event) -> list[threading.Thread]:
    """Start the heartbeat thread (on a database connection of its own) and the reconciler thread."""
    threads = [threading.Thread(target=_beating, args=(state, stop, Database(state.db.url)), name="descent-heartbeat",
                                daemon=True),
               threading.Thread(target=_reconciling, args=(state, stop), name="descent-reconciler", daemon=True)]
    for thread in threads:
        thread.start()
    return threads


def describe(state: WorkerState) -> fleet_store.Heartbeat:
    """This worker's heartbeat: who it is, what it runs on, what it runs now."""
    return fleet_store.Heartbeat(
        worker_id=state.worker_id, hostname=state.hostname, pid=os.getpid(), queues=state.queues,
        device=state.device, current_job=state.current_job, device_name=state.device_name,
        cuda_memory=state.cuda_memory, versions=_versions())


@functools.cache
def _versions() -> dict[str, str]:
    import celery
    import torch

    try:
        descent = importlib.metadata.version("descent")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        descent = "unknown"
    return {"descent": descent, "python": platform.python_version(), "torch": torch.__version__,
            "celery": celery.__version__}


def _enforce_hard_limit(state: WorkerState) -> None:
    """The backstop for a job stuck inside one step (the solo pool has no Celery time limits):
    past ``task_time_limit`` the process exits, the job's lease lapses and the job is retried,
    then failed once it has used its attempts."""
    job = state.current_job
    if job is not None and time.monotonic() - state.current_since > state.settings.task_time_limit:
        log.error("job %s ran past the hard limit of %.0fs; exiting this worker", job, state.settings.task_time_limit)
        logging.shutdown()
        os._exit(70)


def start_background(state: WorkerState) -> None:
    """On a worker's start: the first heartbeat, then the heartbeat, reconciler and retention threads,
    all on ``state`` (the one the worker's start-up built)."""
    try:
        fleet_store.heartbeat(state.db, describe(state))
    except StoreError as exc:
        log.warning("first heartbeat failed: %s", exc)
    start_threads(state, _stop)
    retention.start(state.db, state.settings, _stop)  # a thread of its own, when a retention is set


def leave(state: WorkerState) -> None:
    """On a clean shutdown: stop the background threads and mark this worker stopped (its row
    stays until pruned, so its last heartbeat still counts: see ``fleet_store.stop_worker``)."""
    _stop.set()
    try:
        fleet_store.stop_worker(state.db, state.worker_id)
    except StoreError:
        pass
