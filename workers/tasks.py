"""Celery tasks: thin, named wrappers that hand a job id to ``workers.runner``."""
from __future__ import annotations

from celery import shared_task

from service.queue import RUN_JOB_TASK
from workers import runner
from workers.state import get_state


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    return str(runner.execute(get_state(), job_id))
