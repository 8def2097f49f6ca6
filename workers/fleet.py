"""A worker's background duties: heartbeats into the database (fleet view, routing), lease
renewal for the running job, the reconciler that re-sends jobs the broker lost, and (on a thread
of its own, ``workers.retention``) the retention clean-up."""
from __future__ import annotations

import logging
import functools
import importlib.metadata
import os
import platform
import random
import threading
import time

from service.queue import QUEUES, messages_for, purge_consumed, waiting_messages
from service.reasons import WAITING_FOR_GPU
from service.store import StoreError
from service.store import fleet as fleet_store
from service.store import jobs as job_store
from workers import retention
from workers.state import WorkerState, get_state, init_state

log = logging.getLogger(__name__)
_stop = threading.Event()


def reconcile_once(requeue_after: float) -> list[str]:
    """Re-send queued jobs that waited too long (their message may be gone: broker restart,
    FLUSHALL) and requeue running jobs whose lease expired (their worker died). Each job is
    re-sent by one worker only: the database row is bumped conditionally first. Jobs of one batch
    key go in shared messages, as a sweep's do (a dead worker's batch resumes as a batch).

    Duplicate messages are kept few: a queued job whose queue still holds waiting messages is
    most likely waiting its turn, so it is re-sent only after ``BACKLOG_PATIENCE`` times as long
    (its message may be lost behind a backlog); a gpu job is not re-sent while no GPU worker
    heartbeats (it keeps its one message), and once none has heartbeat for
    DESCENT_GPU_WAIT_SECONDS, gpu jobs queued longer than that fail, saying why."""
    state = get_state()
    settings = state.settings
    unserved = [] if fleet_store.live_gpu_worker(state.db, settings.worker_lost_seconds) \
        else ["gpu"]
    if unserved and not fleet_store.live_gpu_worker(state.db, settings.gpu_wait_seconds):
        failed = job_store.fail_unserved(state.db, "gpu", settings.gpu_wait_seconds,
                                         f"{WAITING_FOR_GPU}: none came within {settings.gpu_wait_seconds:g} s "
                                         "(DESCENT_GPU_WAIT_SECONDS)")
        if failed:
            log.warning("failed %d gpu job(s) that waited over %g s for a GPU worker", len(failed),
                        settings.gpu_wait_seconds)
    waiting = [queue for queue in QUEUES if _waiting(state, queue)]
    stale = [job for job in job_store.stale_jobs(state.db, requeue_after, waiting_in=waiting, unserved=unserved)
             if job_store.requeue_if_stale(state.db, job[0], requeue_after)]
    sent = []
    if state.dispatcher is not None:
        for message in messages_for(stale, state.settings.batch_max):
            if state.dispatcher.send_message(message):
                sent.extend(message.job_ids)
    if sent:
        log.info("reconciler re-sent %d job(s)", len(sent))
    return sent


def _waiting(state: WorkerState, queue: str) -> bool:
    """Does ``queue`` hold a message not yet delivered? (Yes when the broker cannot say.)"""
    if state.dispatcher is None:
        return True
    try:
        return waiting_messages(state.dispatcher.celery, queue) > 0
    except Exception as exc:  # noqa: BLE001 - a broker that cannot answer cannot take a re-send either
        log.warning("could not count the messages waiting in %s: %s", queue, exc)
        return True


def _loop(queues: list[str]) -> None:
    state = init_state(queues)
    settings = state.settings
    requeue_after = settings.requeue_after
    next_reconcile = 0.0
    elapsed = 0.0
    while not _stop.wait(settings.heartbeat_seconds * (0.8 + 0.4 * random.random())):
        elapsed += settings.heartbeat_seconds
        _enforce_hard_limit(state)
        try:
            fleet_store.heartbeat(state.db, describe(state))
            held = list(state.current_jobs) or ([state.current_job] if state.current_job else [])
            if held:  # the jobs no longer held (lost leases) are simply not renewed
                job_store.renew_jobs(state.db, held, state.worker_id, settings.lease_seconds)
            if elapsed >= next_reconcile:
                reconcile_once(requeue_after)
                fleet_store.prune_workers(state.db, settings.worker_retention)
                if state.dispatcher is not None:
                    purge_consumed(state.dispatcher.celery)
                next_reconcile = elapsed + requeue_after / 3
        except StoreError as exc:
            log.warning("fleet heartbeat failed: %s", exc)
        except Exception:  # noqa: BLE001 - the background thread must outlive one bad beat
            log.exception("fleet heartbeat failed")


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


def start_background(queues: list[str]) -> None:
    state = init_state(queues)
    try:
        fleet_store.heartbeat(state.db, describe(state))
    except StoreError as exc:
        log.warning("first heartbeat failed: %s", exc)
    threading.Thread(target=_loop, args=(queues,), name="descent-fleet", daemon=True).start()
    retention.start(state.db, state.settings, _stop)  # a thread of its own, when a retention is set


def leave() -> None:
    _stop.set()
    try:
        fleet_store.remove_worker(get_state().db, get_state().worker_id)
    except StoreError:
        pass
