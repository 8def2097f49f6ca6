"""A worker's background duties: heartbeats into the database (fleet view, routing), lease
renewal for the running job, and the reconciler that re-sends jobs the broker lost."""
from __future__ import annotations

import logging
import os
import random
import threading
import time

from service.queue import messages_for
from service.store import StoreError
from service.store import fleet as fleet_store
from service.store import jobs as job_store
from workers.state import WorkerState, get_state, init_state

log = logging.getLogger(__name__)
_stop = threading.Event()


def reconcile_once(requeue_after: float) -> list[str]:
    """Re-send queued jobs that waited too long (their message may be gone: broker restart,
    FLUSHALL) and requeue running jobs whose lease expired (their worker died). Each job is
    re-sent by one worker only: the database row is bumped conditionally first. Jobs of one batch
    key go in shared messages, as a sweep's do (a dead worker's batch resumes as a batch)."""
    state = get_state()
    stale = [job for job in job_store.stale_jobs(state.db, requeue_after)
             if job_store.requeue_if_stale(state.db, job[0], requeue_after)]
    sent = []
    if state.dispatcher is not None:
        for message in messages_for(stale, state.settings.batch_max):
            if state.dispatcher.send_message(message):
                sent.extend(message.job_ids)
    if sent:
        log.info("reconciler re-sent %d job(s)", len(sent))
    return sent


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
            fleet_store.heartbeat(state.db, state.worker_id, state.hostname, os.getpid(), state.queues,
                                  state.device, state.current_job)
            held = list(state.current_jobs) or ([state.current_job] if state.current_job else [])
            if held:  # the jobs no longer held (lost leases) are simply not renewed
                job_store.renew_jobs(state.db, held, state.worker_id, settings.lease_seconds)
            if elapsed >= next_reconcile:
                reconcile_once(requeue_after)
                next_reconcile = elapsed + requeue_after / 3
        except StoreError as exc:
            log.warning("fleet heartbeat failed: %s", exc)
        except Exception:  # noqa: BLE001 - the background thread must outlive one bad beat
            log.exception("fleet heartbeat failed")


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
        fleet_store.heartbeat(state.db, state.worker_id, state.hostname, os.getpid(), queues, state.device, None)
    except StoreError as exc:
        log.warning("first heartbeat failed: %s", exc)
    threading.Thread(target=_loop, args=(queues,), name="descent-fleet", daemon=True).start()


def leave() -> None:
    _stop.set()
    try:
        fleet_store.remove_worker(get_state().db, get_state().worker_id)
    except StoreError:
        pass
