"""Celery tasks: thin, named wrappers that hand a job id to ``workers.runner``."""
from __future__ import annotations

from celery import shared_task

from service.queue import RUN_JOB_TASK
from workers import runner
from workers.state import get_state


@shared_task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: str) -> str:
    state = get_state()
    outcome = runner.execute(state, job_id)
    if outcome == "released":
        from workers.fleet import dispatcher

        dispatcher().send(job_id, "gpu" if state.device == "gpu" else "cpu")
    return outcome
