"""Claiming a batch: a job and the compatible queued jobs behind it, for one worker to run together.

Jobs are compatible when they share a batch key (``service.spec.batchkey``, stored in
``jobs.batch_key``) and a queue, and start from the same step: all fresh, or all resumed from
checkpoints of one step (a batch whose worker died resumes together). The batch's other jobs are
claimed by an UPDATE over ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (one for the jobs
the message names, one more for others while the batch has room), so two workers never take one
job and neither waits on the other's rows; SQLite's single writer serialises it.
Every claimed job is then held exactly as ``jobs.claim_job`` holds one.
"""
from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Collection, Sequence

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from service.store import counters, data
from service.store.db import Database, StoreError, clock, one_of
from service.store.jobs import claim_job, job_record
from service.store.chunks import cut
from service.store.models import Job
from service.store.records import JobRecord
from service.status import JobStatus

log = logging.getLogger(__name__)


def claim_batch(db: Database, job_ids: Sequence[str], worker: str, lease_seconds: float, max_attempts: int,
                limit: int, max_elements: int, solo_keys: Collection[str] = ()) -> list[JobRecord]:
    """Claim the first claimable job of ``job_ids`` (as ``claim_job``), then, up to ``limit`` jobs
    in all and ``max_elements`` elements of x together (a batch is never bigger than the biggest
    job), queued jobs compatible with it: the rest of ``job_ids`` first, then the oldest others;
    none for a key of ``solo_keys``. Returns the claimed jobs (with their checkpoints and their
    data's values), the first one first; [] if none."""
    lead = None
    for job_id in _claimable_among(db, job_ids):
        lead = claim_job(db, job_id, worker, lease_seconds, max_attempts)
        if lead is not None:
            break
    if lead is None:
        return []
    room = min(limit, max(1, max_elements // max(1, math.prod(lead.shape)))) - 1
    claimed: list[JobRecord] = []
    if lead.batch_key is not None and lead.batch_key not in solo_keys and room > 0:
        listed = [job_id for job_id in job_ids if job_id != lead.id]
        claimed = _claim_compatible(db, lead, worker, lease_seconds, max_attempts, listed[:room], room) if listed else []
        if len(claimed) < room:
            claimed += _claim_compatible(db, lead, worker, lease_seconds, max_attempts, None, room - len(claimed))
    _count_batch(db, worker, 1 + len(claimed))
    return data.with_values(db, [lead, *claimed])


def _count_batch(db: Database, worker: str, size: int) -> None:
    """Observe a claim's size in ``descent_batch_jobs``. Its own short transaction, after the claims
    have committed (a batch is claimed in up to three), and best effort: the jobs are claimed
    either way, and a caller that retried a failed ``claim_batch`` would find them taken."""
    observed = counters.increments()
    counters.observe(observed, counters.BATCH_JOBS, [size])
    try:
        with db.session() as s:
            counters.add(s, worker, observed)
    except (StoreError, SQLAlchemyError):
        log.warning("could not count a batch of %d job(s) in descent_batch_jobs", size, exc_info=True)


def _claimable_among(db: Database, job_ids: Sequence[str]) -> list[str]:
    """``job_ids`` that are queued or running under a lapsed lease, in order: one query, so a
    message whose jobs all went elsewhere costs one round trip, not one per job."""
    if len(job_ids) == 1:
        return list(job_ids)
    jobs, now = Job.__table__, clock(db.dialect)
    with db.session() as s:
        found = set(s.scalars(select(jobs.c.id).where(
            one_of(jobs.c.id, job_ids, db.dialect),
            or_(jobs.c.status == JobStatus.QUEUED,
                and_(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_expires_at < now)))))
    return [job_id for job_id in job_ids if job_id in found]


def _claim_compatible(db: Database, lead: JobRecord, worker: str, lease_seconds: float, max_attempts: int,
                      among: list[str] | None, room: int) -> list[JobRecord]:
    """Up to ``room`` queued jobs compatible with ``lead`` (among ``among`` when given), claimed."""
    jobs, now = Job.__table__, clock(db.dialect)
    same_start = (jobs.c.checkpoint_step.is_(None) if lead.checkpoint_step is None
                  else jobs.c.checkpoint_step == lead.checkpoint_step)
    candidates = (select(jobs.c.id)
                  .where(jobs.c.batch_key == lead.batch_key, jobs.c.status == JobStatus.QUEUED,
                         jobs.c.queue == lead.queue, jobs.c.cancel_requested.is_(False),
                         jobs.c.attempts < max_attempts, same_start)
                  .order_by(jobs.c.created_at, jobs.c.id).limit(room).with_for_update(skip_locked=True))
    if among is not None:
        candidates = candidates.where(one_of(jobs.c.id, among, db.dialect))
    if db.dialect == "postgresql":  # the locked rows picked once, in FROM (an IN subquery may run again)
        picked = candidates.subquery("picked")
        chosen = jobs.c.id == picked.c.id
    else:  # SQLite: one writer at a time, and no FOR UPDATE
        chosen = jobs.c.id.in_(candidates.scalar_subquery())
    with db.session() as s:
        rows = s.execute(
            update(jobs).where(chosen, jobs.c.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, worker=worker, attempts=jobs.c.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    started_at=func.coalesce(jobs.c.started_at, now))
            .returning(*jobs.c)
        ).all()
        redo = {row.id: row.checkpoint_step or 0 for row in rows if row.checkpoint_step is not None or row.attempts > 1}
        if redo:  # as claim_job: rows an earlier holder wrote past the checkpoint are written again
            cut(s, redo)
        return [job_record(row, with_checkpoint=True) for row in rows]


def queued_among(db: Database, job_ids: Sequence[str]) -> list[str]:
    """Which of ``job_ids`` are still queued, in their order."""
    with db.session() as s:
        queued = set(s.scalars(select(Job.id).where(one_of(Job.id, job_ids, db.dialect), Job.status == JobStatus.QUEUED)))
    return [job_id for job_id in job_ids if job_id in queued]
