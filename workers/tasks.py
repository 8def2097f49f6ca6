"""Celery tasks: thin, named wrappers that hand job ids to ``workers.runner``."""
from __future__ import annotations

from celery import shared_task

from service.queue import RUN_JOB_TASK, RUN_JOBS_TASK
from workers import runner
from workers.state import get_state


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    return str(runner.execute(get_state(), job_id))


@shared_task(name=RUN_JOBS_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_jobs(job_ids: list[str]) -> str:
    """Jobs of one batch key, sent together (a sweep's, or a batch handed back at shutdown)."""
    outcomes = runner.execute_message(get_state(), [str(job_id) for job_id in job_ids])
    return f"{sum(o != 'skipped' for o in outcomes.values())} of {len(outcomes)} job(s) run"
