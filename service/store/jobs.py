"""Jobs: creation, lookup, listing, and every state change of the lifecycle.

Statuses are ``JobStatus``. A worker *claims* a job with one
conditional UPDATE (queued, or running with an expired lease), so two workers can never both
hold it; every later write by that worker is fenced on ``worker = me AND status = running``
(and, inside ``believing``, on the job's stored history reaching what the worker wrote).

Nothing a worker does to another worker's job waits on that worker's row locks: a worker frozen
(SIGSTOP) or cut off inside one of its transactions keeps its rows locked until the server ends
its session, so claims, reclaims and the reconciler's other writes pick rows with ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL (a locked job is left for the next pass, and taken as soon as the lock
goes; SQLite has one writer and no row locks), and count what they did in the counters of the
worker doing it (a row of its own: ``counters``).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from sqlalchemy import (JSON, Integer, String, Text, and_, bindparam, case, cast, column, func, insert, or_, select,
                        update)
from sqlalchemy.exc import IntegrityError

from service.rows import HistoryRows, Progress
from service.config import Quotas
from service.jsonsafe import json_safe
from service.store import counters, data
from service.store import tensors as job_tensors
from service.store.db import Conflict, Database, LeaseLost, as_utc, by_index, clock, commit_clock, one_of, owned_row
from service.store.models import HistoryChunk, Job, JobTag, Worker
from service.store.quotas import check_quotas, settle_reservation, settle_reservations, values_per_row
from service.store.records import JobRecord
from service.store.chunks import cut, stored_rows, write_many, write_once
from service.status import FINISHED, JobStatus

# The owner of every job made before owners existed, and of an auth-off (loopback) service's jobs.
LOCAL_OWNER = "local"
# Stored idempotency keys of every owner but ``local`` start with this (clients may not send it).
SCOPED_KEY_PREFIX = "owner-sha256:"

def job_record(job: Any, with_checkpoint: bool = False) -> JobRecord:
    """A record from an ORM ``Job`` or a Core row of the jobs table. Tags are read from the
    stored spec; the ``job_tags`` table only indexes them for filtering."""
    return JobRecord(
        id=job.id, owner=job.owner, status=JobStatus(job.status), spec=job.spec, shape=list(job.shape), queue=job.queue,
        name=job.name, tags=dict(job.spec.get("tags") or {}), created_at=as_utc(job.created_at), started_at=as_utc(job.started_at),
        finished_at=as_utc(job.finished_at), worker=job.worker, attempts=job.attempts,
        cancel_requested=job.cancel_requested, result=job.result, error=job.error,
        checkpoint=job.checkpoint if with_checkpoint else None, checkpoint_step=job.checkpoint_step,
        batch_key=job.batch_key, progress=job.progress, lease_expires_at=as_utc(job.lease_expires_at),
        history_dropped_at=as_utc(job.history_dropped_at), sweep_id=job.sweep_id, sweep_index=job.sweep_index,
    )


def create_job(db: Database, spec: dict[str, Any], shape: list[int], queue: str, idempotency_key: str | None = None,
               *, owner: str = LOCAL_OWNER, reserved_values: int = 0, batch_key: str | None = None,
               quotas: Quotas | None = None, tensors: data.Tensors | None = None) -> tuple[JobRecord, bool]:
    """Store a new queued job of ``owner``; returns (job, created). A repeated idempotency key
    (per owner) returns the first job (created False), or raises Conflict if its spec differs.
    With ``quotas`` (None: exempt, as admins are), raises QuotaExceeded rather than go over one.
    ``tensors`` holds the values of references the spec already has (``data.split`` done before)."""
    key = scoped_key(owner, idempotency_key)
    tensors = tensors or data.Tensors()
    spec, reads = data.split(spec, tensors)
    if key is not None:
        existing = _by_idempotency_key(db, key, spec)
        if existing is not None:
            return existing, False
    now, job_id, jobs = clock(db.dialect), str(uuid.uuid4()), Job.__table__
    tags = dict(spec.get("tags") or {})
    try:
        with db.session() as s:  # Core inserts: this is every submission's path
            if quotas is not None:
                check_quotas(s, owner, quotas, jobs=1, values=reserved_values)
            created_at = s.execute(insert(jobs).values(
                id=job_id, owner=owner, status=JobStatus.QUEUED, spec=spec, shape=shape, queue=queue,
                name=spec.get("name"), idempotency_key=key, created_at=now, enqueued_at=now, attempts=0,
                cancel_requested=False, reserved_values=reserved_values, batch_key=batch_key,
            ).returning(jobs.c.created_at)).scalar_one()
            if tags:
                s.execute(insert(JobTag.__table__), [{"job_id": job_id, "key": k, "value": v} for k, v in tags.items()])
            data.save(s, tensors, [(job_id, reads)], db.dialect)
    except IntegrityError:
        if key is None:
            raise
        existing = _by_idempotency_key(db, key, spec)
        if existing is None:
            raise
        return existing, False
    return JobRecord(id=job_id, owner=owner, status=JobStatus.QUEUED, spec=spec, shape=shape, queue=queue, name=spec.get("name"), tags=tags,
                     created_at=as_utc(created_at), started_at=None, finished_at=None, worker=None, attempts=0,
                     cancel_requested=False, result=None, error=None, batch_key=batch_key), True


def insert_jobs(s: Any, owner: str, jobs: Iterable[tuple[dict[str, Any], list[int], str, int, str | None]],
                created_at: Any, sweep_id: str | None = None) -> list[tuple[str, str, str | None]]:
    """Store many new queued jobs of ``owner`` in the caller's transaction ``s``, in bulk (one
    INSERT of many rows, sent in pages), all with one ``created_at`` (one submission, for the
    quota); each job is (spec, shape, queue, reserved_values, batch_key); with ``sweep_id`` each gets
    its place in the sweep, in order. Returns [(id, queue, batch_key)] in the same order."""
    rows, tag_rows, out, tensors, reads = [], [], [], data.Tensors(), []
    for index, (spec, shape, queue, reserved_values, batch_key) in enumerate(jobs):
        job_id = str(uuid.uuid4())
        spec, names = data.split(spec, tensors)
        if names:
            reads.append((job_id, names))
        rows.append({"id": job_id, "owner": owner, "status": JobStatus.QUEUED.value, "spec": spec, "shape": shape,
                     "queue": queue, "name": spec.get("name"), "idempotency_key": None, "created_at": created_at,
                     "enqueued_at": created_at, "attempts": 0, "cancel_requested": False,
                     "reserved_values": reserved_values, "sweep_id": sweep_id,
                     "sweep_index": index if sweep_id is not None else None, "batch_key": batch_key})
        tag_rows.extend({"job_id": job_id, "key": k, "value": v} for k, v in (spec.get("tags") or {}).items())
        out.append((job_id, queue, batch_key))
    if rows:
        s.execute(insert(Job.__table__), rows)
    if tag_rows:
        s.execute(insert(JobTag.__table__), tag_rows)
    data.save(s, tensors, reads, s.get_bind().dialect.name)
    return out


def scoped_key(owner: str, idempotency_key: str | None) -> str | None:
    """Idempotency keys are per owner: one owner's key never finds, nor blocks, another's job.
    Keys of ``local`` (every job before owners existed) are stored as sent, others as a hash of
    owner and key (which fits the column whatever their lengths)."""
    if idempotency_key is None or owner == "local":
        return idempotency_key
    return SCOPED_KEY_PREFIX + hashlib.sha256(f"{owner}\n{idempotency_key}".encode("utf-8", "surrogatepass")).hexdigest()


def _by_idempotency_key(db: Database, key: str, spec: dict[str, Any]) -> JobRecord | None:
    with db.session() as s:
        job = s.scalar(select(Job).where(Job.idempotency_key == key))
        if job is None:
            return None
        if job.spec != spec:
            raise Conflict(f"this Idempotency-Key was already used for a different job spec (job {job.id})")
        return job_record(job)


# Every job id is a UUID this store made; any other text names no job and is not worth a query
# (and PostgreSQL cannot even compare text holding a NUL).
_JOB_ID = re.compile(r"[0-9a-f-]{1,36}")


def get_job(db: Database, job_id: str, with_checkpoint: bool = False, owner: str | None = None) -> JobRecord:
    """The job; with ``owner``, only if it is that owner's (another's is NotFound, as if absent)."""
    with db.session() as s:
        [job] = _with_workers_seen(s, [job_record(owned_row(s, Job, job_id, owner, _JOB_ID, "job"), with_checkpoint)])
        return job


def _with_workers_seen(s: Any, records: list[JobRecord]) -> list[JobRecord]:
    """The records, each running job's with its worker's last heartbeat (one query for all), so
    the API can say when a job's worker was lost."""
    running = {r.worker for r in records if r.status == JobStatus.RUNNING and r.worker}
    if not running:
        return records
    seen = dict(s.execute(select(Worker.id, Worker.last_heartbeat).where(Worker.id.in_(running))).all())
    return [replace(r, worker_seen_at=as_utc(seen[r.worker])) if r.worker in seen else r for r in records]


def finished_among(db: Database, job_ids: list[str]) -> list[str]:
    """Which of ``job_ids`` have finished (one query per 500 ids)."""
    finished: list[str] = []
    with db.session() as s:
        for i in range(0, len(job_ids), 500):
            finished.extend(s.scalars(select(Job.id).where(Job.id.in_(job_ids[i:i + 500]),
                                                            Job.status.in_(tuple(FINISHED)))))
    return finished


def _encode_cursor(job: JobRecord) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this service did not make."""
    raw = base64.urlsafe_b64decode(cursor.encode()).decode()
    stamp, job_id = raw.split("|", 1)
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError("not a job id")
    return datetime.fromisoformat(stamp), job_id


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing shows; None: any."""

    status: str | None = None
    tag: tuple[str, str] | None = None
    name: str | None = None
    stop_reason: str | None = None  # the result's: a diverged run is ``succeeded`` with ``diverged``
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_jobs(db: Database, where: JobFilter = JobFilter(), limit: int = 50, cursor: str | None = None,
              owner: str | None = None, newest_first: bool = False) -> tuple[list[JobRecord], str | None]:
    """Jobs in creation order (or newest first), ``limit`` at a time (only ``owner``'s when
    given), matching ``where``; returns (page, next cursor or None)."""
    if newest_first:
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    else:
        query = select(Job).order_by(Job.created_at, Job.id).limit(limit + 1)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if where.status:
        query = query.where(Job.status == where.status)
    if where.tag:
        query = query.join(JobTag, JobTag.job_id == Job.id).where(JobTag.key == where.tag[0],
                                                                  JobTag.value == where.tag[1])
    if where.name is not None:
        query = query.where(Job.name == where.name)
    if where.stop_reason is not None:
        query = query.where(Job.result["stop_reason"].as_string() == where.stop_reason)
    if where.created_after is not None:
        query = query.where(Job.created_at >= where.created_after)
    if where.created_before is not None:
        query = query.where(Job.created_at < where.created_before)
    if cursor:
        stamp, job_id = decode_cursor(cursor)
        if newest_first:
            query = query.where(or_(Job.created_at < stamp, and_(Job.created_at == stamp, Job.id < job_id)))
        else:
            query = query.where(or_(Job.created_at > stamp, and_(Job.created_at == stamp, Job.id > job_id)))
    with db.session() as s:
        records = _with_workers_seen(s, [job_record(j) for j in s.scalars(query)])
    page = records[:limit]
    return page, (_encode_cursor(page[-1]) if len(records) > limit else None)


def claim_job(db: Database, job_id: str, worker: str, lease_seconds: float, max_attempts: int) -> JobRecord | None:
    """Take the job for ``worker`` if it is queued, or running under an expired lease.

    Returns the job (with its checkpoint) or None if someone else holds it or it
    is finished.
    A job already tried ``max_attempts`` times is failed instead. Rows past the checkpoint are
    deleted, so the resumed run rewrites them exactly once.
    """
    now = clock(db.dialect)
    claimable = or_(Job.status == JobStatus.QUEUED, _lease_lapsed(now))
    jobs = Job.__table__  # Core statements on the hot path: no ORM identity map to maintain
    with db.session() as s:
        row = s.execute(
            update(jobs).where(jobs.c.id == _unlocked(job_id, claimable), claimable,
                               jobs.c.cancel_requested.is_(False), jobs.c.attempts < max_attempts)
            .values(status=JobStatus.RUNNING, worker=worker, attempts=jobs.c.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    started_at=func.coalesce(jobs.c.started_at, now))
            .returning(*jobs.c)
        ).first()
        if row is None:
            _settle_unclaimable(s, job_id, claimable, max_attempts, now, worker)
            return None
        if row.checkpoint_step is not None or row.attempts > 1:
            # An earlier holder may have written rows past its last checkpoint: the resumed run
            # (from that checkpoint, or from the start) writes them again.
            cut(s, {job_id: row.checkpoint_step or 0})
        return job_record(row, with_checkpoint=True)


def _unlocked(job_id: str, *where: Any) -> Any:
    """``job_id`` if its row matches ``where`` and no other transaction holds it locked (NULL
    otherwise): a subquery that locks the row, skipping it if locked (PostgreSQL; SQLite has one
    writer and renders no FOR UPDATE), so the statement using it never waits on a frozen holder."""
    return (select(Job.id).where(Job.id == job_id, *where).with_for_update(skip_locked=True)
            .correlate(None).scalar_subquery())


def _settle_unclaimable(s: Any, job_id: str, claimable: Any, max_attempts: int, now: Any, worker: str) -> None:
    """A claimable job that cannot be claimed is either cancelled or out of attempts: end it
    (counted as ``worker``'s). A job whose row is locked is left alone."""
    job = s.scalar(select(Job).where(Job.id == job_id, claimable).with_for_update(skip_locked=True))
    if job is None:
        return
    if job.cancel_requested:
        job.status, job.finished_at, job.worker = JobStatus.CANCELLED, now, None
    elif job.attempts >= max_attempts:
        job.status, job.finished_at = JobStatus.FAILED, now
        job.error = (f"gave up after {job.attempts} attempts: each time, the worker running this job "
                     "stopped before it finished (killed, crashed or lost)")
    else:
        return
    s.flush()
    settle_reservation(s, job_id)
    counters.ended(s, worker, job.status)


@dataclass(frozen=True)
class Written:
    """What a worker believes it has stored of a job it holds: the step of the last history row it
    wrote (None: none yet since its claim) and the checkpoint step it last moved to (at first, the
    one it resumed from)."""

    last_step: int | None = None
    checkpoint_step: int | None = None


_believed: ContextVar[tuple[Mapping[str, Written], set[str]] | None] = ContextVar("descent_believed", default=None)


@contextmanager
def believing(written: Mapping[str, Written]) -> Iterator[set[str]]:
    """Within this block (this thread or task), every lease renewal of a job of ``written`` (a
    chunk's save renews too: ``history.save_chunks``) is also fenced on its stored history: the
    row of its ``last_step`` must be stored and its checkpoint step be at least ``checkpoint_step``.
    A job behind what the worker wrote (a commit the server lost: a crash of a database that did
    not flush it) is not renewed, none of its rows are written, and its id is added to the set
    yielded, so the worker stops it and it resumes from what is stored. ``written`` is read at each
    renewal: the caller updates it as its writes commit."""
    mismatched: set[str] = set()
    token = _believed.set((written, mismatched))
    try:
        yield mismatched
    finally:
        _believed.reset(token)


def _behind(s: Any, dialect: str, job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` store less than the worker believes (``believing``), in ``s``'s
    transaction; the mismatched ids are also added to the caller's set."""
    believed = _believed.get()
    if believed is None:
        return set()
    written, mismatched = believed
    expected = {job_id: written[job_id] for job_id in job_ids if job_id in written}
    if not expected:
        return set()
    jobs, history = Job.__table__, HistoryChunk.__table__
    stored = dict(s.execute(select(jobs.c.id, jobs.c.checkpoint_step)
                            .where(one_of(jobs.c.id, list(expected), dialect))).all())
    with_rows = [job_id for job_id, w in expected.items() if w.last_step is not None]
    present: set[tuple[str, int]] = set()
    if with_rows:
        steps = sorted({expected[job_id].last_step for job_id in with_rows})  # a batch's lanes: mostly one step
        present = {(r[0], int(r[1])) for r in s.execute(select(history.c.job_id, history.c.last_step).where(
            one_of(history.c.job_id, with_rows, dialect), history.c.last_step.in_(steps)))}
    behind = set()
    for job_id, w in expected.items():
        if job_id not in stored:
            continue  # gone: the fence on the holder says so
        checkpoint = stored[job_id]
        if w.checkpoint_step is not None and (checkpoint is None or checkpoint < w.checkpoint_step):
            behind.add(job_id)
        if w.last_step is not None and (job_id, w.last_step) not in present:
            behind.add(job_id)
    mismatched.update(behind)
    return behind


def renew(db: Database, job_id: str, worker: str, lease_seconds: float, session: Any = None) -> bool:
    """Extend the lease (in ``session``'s transaction when given, so a history chunk commits
    with it); returns whether a cancel was requested. Raises LeaseLost (also for a job whose
    stored history is behind what the worker wrote, inside ``believing``)."""
    cancel = renew_jobs(db, [job_id], worker, lease_seconds, session).get(job_id)
    if cancel is None:
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")
    return cancel


def renew_jobs(db: Database, job_ids: Sequence[str], worker: str, lease_seconds: float,
               session: Any = None, progress: Mapping[str, Progress] | None = None,
               skip_locked: bool = False) -> dict[str, bool]:
    """Extend the leases of the jobs ``worker`` still holds among ``job_ids`` (and set the
    ``progress`` given for some of them), in one statement on PostgreSQL (in ``session``'s
    transaction when given); returns {job id: cancel requested} for those, so a job missing from
    the answer is no longer held (its lease was lost), or, inside ``believing``, its stored
    history is behind what the worker wrote (then it is in ``believing``'s set). ``skip_locked``
    (the heartbeat's renewal) leaves alone the rows another transaction holds, the worker's own
    chunk or finish among them, rather than wait on them: a missing job then says nothing."""
    if session is None:
        with db.session() as s:
            return renew_jobs(db, job_ids, worker, lease_seconds, s, progress, skip_locked)
    behind = _behind(session, db.dialect, job_ids)
    if behind:
        job_ids = [job_id for job_id in job_ids if job_id not in behind]
        progress = {job_id: p for job_id, p in (progress or {}).items() if job_id not in behind}
        if not job_ids:
            return {}
    now, jobs = clock(db.dialect), Job.__table__
    lease = now + timedelta(seconds=lease_seconds)
    held_by_worker = (jobs.c.worker == worker, jobs.c.status == JobStatus.RUNNING)
    stands = {job_id: stored_progress(p) for job_id, p in (progress or {}).items()}
    if stands and db.dialect == "postgresql":
        stand = func.json_to_recordset(cast(bindparam("stands", type_=Text()), JSON)).table_valued(
            column("id", String()), column("progress", JSON())).render_derived(name="stand", with_types=True)
        rows = session.execute(
            update(jobs).where(jobs.c.id == stand.c.id, *held_by_worker)
            .values(lease_expires_at=lease, progress=func.coalesce(stand.c.progress, jobs.c.progress))
            .returning(jobs.c.id, jobs.c.cancel_requested),
            {"stands": json.dumps([{"id": i, "progress": stands.get(i)} for i in job_ids], allow_nan=False)}).all()
        return {row[0]: bool(row[1]) for row in rows}
    chosen = one_of(jobs.c.id, job_ids, db.dialect)
    if skip_locked:
        chosen = jobs.c.id.in_(select(Job.id).where(one_of(Job.id, job_ids, db.dialect), *held_by_worker)
                               .with_for_update(skip_locked=True))
    rows = session.execute(
        update(jobs).where(chosen, *held_by_worker)
        .values(lease_expires_at=lease)
        .returning(jobs.c.id, jobs.c.cancel_requested)
    ).all()
    held = {row[0]: bool(row[1]) for row in rows}
    moved = [{"b_id": job_id, "b_progress": stand} for job_id, stand in stands.items() if job_id in held]
    if moved:
        session.execute(update(jobs).where(jobs.c.id == bindparam("b_id"))
                        .values(progress=bindparam("b_progress", type_=jobs.c.progress.type)), moved)
    return held


def stored_progress(progress: Progress) -> dict[str, Any]:
    """A job's ``progress`` as stored (and answered while it runs): non-finite numbers as strings, and the time."""
    return {"step": progress.step, "steps": progress.steps, "f": json_safe(progress.f),
            "grad_norm": json_safe(progress.grad_norm),
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}


def finish_job(db: Database, job_id: str, worker: str, status: str, result: dict[str, Any] | None,
               error: str | None, final: Sequence[HistoryRows] = (),
               tensors: Mapping[str, np.ndarray] | None = None) -> None:
    """End a running job, fenced on the worker holding it, writing its last history rows (and its
    result's ``tensors`` kept in binary) in the same transaction. Raises LeaseLost (also when an
    earlier, ambiguous commit of this very call went through: the job is then no longer running)."""
    if not finish_jobs(db, worker, [Ending(job_id, JobStatus(status), result, error, tuple(final), tensors or {})]):
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")


@dataclass(frozen=True)
class Ending:
    """How one job ends: its status, result or error, and its last history rows."""

    job_id: str
    status: JobStatus
    result: dict[str, Any] | None
    error: str | None
    final: tuple[HistoryRows, ...] = ()
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)  # kept in binary (``store.tensors.split_result``)


def finish_jobs(db: Database, worker: str, endings: Sequence[Ending]) -> set[str]:
    """End the running jobs that ``worker`` still holds among ``endings``, with their last history
    rows, in one transaction (a batch's jobs that stop on the same step end together); returns
    the ids it ended. A job whose cancel was requested never ends succeeded, however late the
    request came. A job not in the answer was no longer held (its lease was lost, or an earlier,
    ambiguous commit of this very call went through)."""
    assert all(e.status in FINISHED for e in endings)
    jobs = Job.__table__
    wanted = bindparam("b_status", type_=String())
    final_status = case((and_(jobs.c.cancel_requested, wanted == JobStatus.SUCCEEDED.value), JobStatus.CANCELLED.value),
                        else_=wanted)
    ids = [e.job_id for e in endings]

    def transaction(s: Any, replace: bool) -> set[str]:
        held = {row.id: values_per_row(row.spec, row.shape) for row in s.execute(
            select(jobs.c.id, jobs.c.spec, jobs.c.shape)
            .where(one_of(jobs.c.id, ids, db.dialect), jobs.c.worker == worker, jobs.c.status == JobStatus.RUNNING)
            .with_for_update())}
        for job_id in _behind(s, db.dialect, list(held)):  # inside ``believing``: a lost commit ends nothing
            del held[job_id]
        mine = [e for e in endings if e.job_id in held]
        if not mine:
            return set(held)
        with by_index(s, db.dialect):  # each job's rows counted by the index, whatever the statistics
            # the last rows first: each job keeps, of its reservation, only what its history holds
            final = [(e.job_id, batch) for e in mine for batch in e.final]
            rows = write_many(s, final, replace)
            stored = stored_rows(jobs.c.id, jobs)
            if db.dialect == "postgresql":
                _end_on_postgresql(s, mine, held, stored)
            else:
                s.execute(
                    update(jobs).where(jobs.c.id == bindparam("b_id"))
                    .values(status=final_status, result=bindparam("b_result", type_=jobs.c.result.type),
                            error=bindparam("b_error", type_=String()), finished_at=commit_clock(db.dialect),
                            lease_expires_at=None, checkpoint=None, reserved_values=stored * bindparam("b_width")),
                    [{"b_id": e.job_id, "b_status": e.status.value, "b_result": e.result, "b_error": e.error,
                      "b_width": held[e.job_id]} for e in mine])
        for e in mine:
            if e.tensors:
                job_tensors.save(s, e.job_id, e.tensors)
        s.execute(update(Worker).where(Worker.id == worker).values(jobs_done=Worker.jobs_done + len(mine)))
        counters.add(s, worker, _ending_counts(s, db.dialect, mine, rows))
        return set(held)

    return write_once(db, transaction)


def _ending_counts(s: Any, dialect: str, endings: Sequence[Ending], rows: int) -> counters.Increments:
    """What ``endings`` (just ended, in ``s``'s transaction) add to the counters: jobs by final
    status, steps, ``rows`` history rows, and each job's run and queue-wait times; one read of
    the ended rows, aggregated here."""
    jobs, counts = Job.__table__, counters.increments()
    ended = s.execute(select(jobs.c.status, jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at)
                      .where(one_of(jobs.c.id, [e.job_id for e in endings], dialect))).all()
    for status, created_at, started_at, finished_at in ended:
        counts[(counters.JOBS_FINISHED, counters.label_text(status=status))] += 1
        started_at, finished_at = as_utc(started_at), as_utc(finished_at)
        if started_at is not None and finished_at is not None:
            counters.observe(counts, counters.JOB_SECONDS, [(finished_at - started_at).total_seconds()])
            counters.observe(counts, counters.QUEUE_WAIT_SECONDS, [(started_at - as_utc(created_at)).total_seconds()])
    counts[(counters.STEPS, "")] += sum(int((e.result or {}).get("steps") or 0) for e in endings)
    counts[(counters.HISTORY_ROWS, "")] += rows
    return counts


def _end_on_postgresql(s: Any, endings: Sequence[Ending], widths: dict[str, int], stored: Any) -> None:
    """``finish_jobs``'s UPDATE as one statement over the endings sent as one JSON document (a
    batch's thousands of endings in one round trip and one parameter: an executemany sends a
    statement per job, and arrays of text are escaped value by value on the way)."""
    jobs = Job.__table__
    ending = func.json_to_recordset(cast(bindparam("endings", type_=Text()), JSON)).table_valued(
        column("id", String()), column("status", String()), column("result", JSON()), column("error", Text()),
        column("width", Integer())).render_derived(name="ending", with_types=True)
    status = case((and_(jobs.c.cancel_requested, ending.c.status == JobStatus.SUCCEEDED.value),
                   JobStatus.CANCELLED.value), else_=ending.c.status)
    s.execute(
        update(jobs).where(jobs.c.id == ending.c.id)
        .values(status=status, result=ending.c.result, error=ending.c.error, finished_at=commit_clock("postgresql"),
                lease_expires_at=None, checkpoint=None, reserved_values=stored * ending.c.width),
        {"endings": json.dumps([{"id": e.job_id, "status": e.status.value, "result": e.result, "error": e.error,
                                 "width": widths[e.job_id]} for e in endings], allow_nan=False)})


def release_job(db: Database, job_id: str, worker: str) -> None:
    """Hand a running job back to the queue (graceful shutdown); its checkpoint stays. The
    attempt is not counted against it."""
    release_jobs(db, [job_id], worker)


def release_jobs(db: Database, job_ids: Sequence[str], worker: str) -> set[str]:
    """``release_job`` for each of ``job_ids`` still held by ``worker``, in one statement; returns
    the ids released."""
    jobs = Job.__table__
    with db.session() as s:
        return set(s.scalars(
            update(jobs).where(one_of(jobs.c.id, job_ids, db.dialect), jobs.c.worker == worker,
                               jobs.c.status == JobStatus.RUNNING)
            .values(status=JobStatus.QUEUED, worker=None, lease_expires_at=None, attempts=jobs.c.attempts - 1,
                    enqueued_at=clock(db.dialect))
            .returning(jobs.c.id)))


def request_cancel(db: Database, job_id: str, owner: str | None = None) -> JobRecord:
    """Cancel a job (only ``owner``'s when given): a queued one at once, a running one within
    about a second, even inside a long step. Conflict if finished."""
    now = clock(db.dialect)
    with db.session() as s:
        job = owned_row(s, Job, job_id, owner, _JOB_ID, "job", for_update=True)
        if job.status in FINISHED:
            raise Conflict(f"job {job_id} has already {job.status}; only queued or running jobs can be cancelled")
        job.cancel_requested = True
        if job.status == JobStatus.QUEUED:
            job.status, job.finished_at = JobStatus.CANCELLED, now
            s.flush()
            settle_reservation(s, job_id)
            counters.ended(s, counters.API_SOURCE, JobStatus.CANCELLED)
    return get_job(db, job_id)


def _lease_lapsed(now: Any) -> Any:
    return and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)


def _overdue(now: Any, requeue_after: float) -> Any:
    return and_(Job.status == JobStatus.QUEUED, Job.enqueued_at < now - timedelta(seconds=requeue_after))


# A job queued behind a backlog (its queue still holds messages) is re-sent only after this many
# times DESCENT_REQUEUE_AFTER: it is most likely waiting its turn, but its message may be lost.
BACKLOG_PATIENCE = 10


def stale_jobs(db: Database, requeue_after: float, waiting: Mapping[str, int | None], limit: int = 500,
               unserved: Sequence[str] = (), batch_max: int = 1) -> list[tuple[str, str, str | None]]:
    """(id, queue, batch key) of jobs that should be running but may have no message in the
    broker: running with an expired lease (reclaimed, each is a queued job again with the one
    message it is then sent), and queued for more than ``requeue_after`` seconds, the longest
    unsent first; none queued on a queue in ``unserved`` (no worker serves it now: a second
    message would only wait too).

    ``waiting`` is how many messages wait in each queue, as the broker counts them (None for a
    queue it could not count: a broker that cannot answer cannot take a re-send either). A
    queue's queued jobs need as many messages as they would be sent in (a message per job, or
    per ``batch_max`` jobs of one batch key, as ``service.queue.messages_for`` groups them); a
    queue gets re-sent only the jobs of the messages it lacks (at most ``batch_max`` jobs a
    message), so it never holds more messages than its jobs need. On a queue that still holds
    messages (most likely a backlog: a job there waits its turn) only jobs overdue
    ``BACKLOG_PATIENCE`` times over are re-sent."""
    now = clock(db.dialect)
    jobs = select(Job.id, Job.queue, Job.batch_key)
    oldest_unsent = (Job.enqueued_at, Job.created_at)
    per = max(1, batch_max)
    with db.session() as s:
        rows = list(s.execute(jobs.where(_lease_lapsed(now)).order_by(Job.created_at).limit(limit)).all())
        needed: dict[str, int] = {}
        for queue, key, count in s.execute(select(Job.queue, Job.batch_key, func.count())
                                           .where(Job.status == JobStatus.QUEUED).group_by(Job.queue, Job.batch_key)):
            needed[queue] = needed.get(queue, 0) + (count if key is None else -(-count // per))
        for queue, messages in sorted(waiting.items()):
            if messages is None or queue in unserved:
                continue
            lacking = needed.get(queue, 0) - messages
            if lacking > 0 and len(rows) < limit:
                after = requeue_after * (BACKLOG_PATIENCE if messages > 0 else 1)
                overdue = s.execute(jobs.where(_overdue(now, after), Job.queue == queue)
                                    .order_by(*oldest_unsent).limit(min(lacking * per, limit - len(rows)))).all()
                rows += _in_messages(overdue, lacking, per)
        return [(r[0], r[1], r[2]) for r in rows]


def _in_messages(jobs: Sequence[Any], messages: int, per: int) -> list[Any]:
    """The first of ``jobs`` (id, queue, batch key) that fill ``messages`` messages, grouped as
    they would be sent: a message per job without a key, per ``per`` jobs of one key."""
    taken, in_key = [], {}
    for job in jobs:
        key = job[2]
        opens = key is None or in_key.get(key, 0) % per == 0
        if opens:
            if messages == 0:
                continue
            messages -= 1
        if key is not None:
            in_key[key] = in_key.get(key, 0) + 1
        taken.append(job)
    return taken


def fail_unserved(db: Database, queue: str, waited: float, error: str, limit: int = 500,
                  source: str = counters.RECONCILER_SOURCE) -> list[str]:
    """Fail the jobs queued on ``queue`` for over ``waited`` seconds (no worker came to serve it),
    with ``error``; returns their ids. Their reservations go back to their owners. Counted as
    ``source``'s (the worker whose reconciler did it); a job whose row is locked is left for later."""
    now = clock(db.dialect)
    oldest = (select(Job.id).where(Job.queue == queue, Job.status == JobStatus.QUEUED,
                                   Job.created_at < now - timedelta(seconds=waited))
              .order_by(Job.created_at).limit(limit).with_for_update(skip_locked=True).correlate(None)
              .scalar_subquery())
    with db.session() as s:
        # One conditional UPDATE: only the jobs it moved from queued to failed are settled and
        # returned (a job claimed meanwhile by a worker is left alone).
        ids = list(s.scalars(update(Job).where(Job.id.in_(oldest), Job.status == JobStatus.QUEUED)
                             .values(status=JobStatus.FAILED, error=error, finished_at=now, lease_expires_at=None)
                             .returning(Job.id).execution_options(synchronize_session=False)))
        if ids:
            settle_reservations(s, ids)
            counters.ended(s, source, JobStatus.FAILED, len(ids))
    return ids


def requeue_if_stale(db: Database, job_id: str, requeue_after: float, source: str = counters.RECONCILER_SOURCE,
                     reclaim: bool = True) -> bool:
    """Mark a stale job as freshly enqueued (a running one with an expired lease goes back to
    queued, unless ``reclaim`` is off); True for the one caller that did it, who then re-sends its
    task. Never waits on a row lock: a job whose row another transaction holds (its worker frozen
    or cut off inside a write) is left as it is, and reclaimed by a later pass once the lock is
    gone, if its lease is still lapsed then (had that transaction committed a renewal, it is not).
    A reclaim is counted as ``source``'s (the reclaiming worker's own counter row)."""
    now = clock(db.dialect)
    with db.session() as s:
        if reclaim:
            res = s.execute(
                update(Job).where(Job.id == _unlocked(job_id, _lease_lapsed(now)), _lease_lapsed(now))
                .values(status=JobStatus.QUEUED, worker=None, lease_expires_at=None, enqueued_at=now)
                .execution_options(synchronize_session=False))
            if res.rowcount == 1:  # reclaimed from a lost worker: it no longer runs this job
                showing = (select(Worker.id).where(Worker.current_job == job_id)
                           .with_for_update(skip_locked=True).correlate(None))
                s.execute(update(Worker).where(Worker.id.in_(showing))
                          .values(current_job=None).execution_options(synchronize_session=False))
                counters.add(s, source, {(counters.RECLAIMS, ""): 1})
                return True
        res = s.execute(
            update(Job).where(Job.id == _unlocked(job_id, _overdue(now, requeue_after)), _overdue(now, requeue_after))
            .values(enqueued_at=now).execution_options(synchronize_session=False))
        return res.rowcount == 1
