"""Celery tasks: thin, named wrappers that hand job ids to ``workers.runner``.

A task that meets an infrastructure fault (the database unavailable or read-only past the
runner's retries, the broker unreachable) keeps its message: it is rejected with requeue, never
acknowledged and dropped, and the jobs it held were handed back without their attempts counted
(``runner``), so an outage never costs a job an attempt."""
from __future__ import annotations

import logging
from typing import Callable

from celery import shared_task
from celery.exceptions import Reject

from service.queue import RUN_JOB_TASK, RUN_JOBS_TASK
from workers import runner
from workers.outages import infrastructure_fault
from workers.state import get_state

log = logging.getLogger("workers.runner")
# Seconds a task waits before it puts back a message it could not run for an outage, so a worker
# that meets a fault at once does not take the same message again in a tight loop.
REQUEUE_PAUSE_SECONDS = 1.0


def kept_on_fault(run: Callable[[], str], job_ids: list[str]) -> str:
    """``run()``; on an infrastructure fault, the message goes back to its queue (Reject, requeue)."""
    try:
        return run()
    except Exception as exc:
        if not infrastructure_fault(exc):
            raise
        log.warning("could not run %s for an infrastructure fault (%s); the message goes back to the queue",
                    ", ".join(job_ids[:5]) + (" ..." if len(job_ids) > 5 else ""), exc)
        get_state().shutting_down.wait(REQUEUE_PAUSE_SECONDS)
        raise Reject(str(exc), requeue=True) from exc


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    return kept_on_fault(lambda: str(runner.execute(get_state(), job_id)), [job_id])


@shared_task(name=RUN_JOBS_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_jobs(job_ids: list[str]) -> str:
    """Jobs of one batch key, sent together (a sweep's, or a batch handed back at shutdown)."""
    ids = [str(job_id) for job_id in job_ids]

    def run() -> str:
        outcomes = runner.execute_message(get_state(), ids)
        return f"{sum(o != 'skipped' for o in outcomes.values())} of {len(outcomes)} job(s) run"

    return kept_on_fault(run, ids)
