"""Sweeps: many jobs stored in one transaction, their counts, a summary page, and cancelling them.

A sweep's jobs are ordinary rows of ``jobs`` carrying ``sweep_id`` and ``sweep_index`` (the job's
place in the sweep); the ``sweeps`` row keeps the request (base, grid, starts, tolerance).
"""
from __future__ import annotations

import base64
import math
import re
import uuid
from typing import Any, Callable, Iterable

from sqlalchemy import and_, bindparam, case, exists, func, insert, select, update

from service.config import Quotas
from service.store import counters, data
from service.store.db import Conflict, Database, as_utc, clock, owned_row, utcnow
from service.store.jobs import insert_jobs, job_record, scoped_key
from service.store.models import HistoryRow, Job, Sweep
from service.store.quotas import check_quotas, settle_reservation
from service.store.records import JobRecord, SweepRecord
from service.store.status import JobStatus

SORTS = ("created", "f")
_SWEEP_ID = re.compile(r"[0-9a-f-]{1,36}")


def _sweep_record(row: Any) -> SweepRecord:
    return SweepRecord(id=row.id, owner=row.owner, name=row.name, tags=dict(row.tags or {}), base=row.base,
                       grid=list(row.grid), starts=dict(row.starts), n_starts=row.n_starts, jobs=row.jobs,
                       tolerance=row.tolerance, created_at=as_utc(row.created_at))


def create_sweep(db: Database, *, owner: str, name: str | None, tags: dict[str, str], base: dict[str, Any],
                 grid: list[Any], starts: dict[str, Any], n_starts: int, tolerance: float,
                 jobs: Iterable[tuple[dict[str, Any], list[int], str, int, str | None]], count: int, values: int,
                 quotas: Quotas | None = None, idempotency_key: str | None = None,
                 request_digest: str | None = None) -> tuple[SweepRecord, list[tuple[str, str, str | None]]]:
    """Store a sweep and its ``count`` jobs ((spec, shape, queue, reserved_values, batch_key), in sweep
    order) in ONE transaction: one submission of ``count`` jobs reserving ``values`` for the
    quotas (None: exempt), one ``created_at``. Returns the sweep and [(job id, queue, batch_key)].
    With ``idempotency_key`` (kept with ``request_digest``; see ``sweep_for_key``) a concurrent
    submission of the same key raises IntegrityError: nothing of this one is stored."""
    sweep_id = str(uuid.uuid4())
    base, _ = data.split(base, data.Tensors())  # its jobs store the values; the base keeps references
    with db.session() as s:
        if quotas is not None:
            check_quotas(s, owner, quotas, jobs=count, values=values)
        now = s.scalar(select(clock(db.dialect))) if db.dialect == "postgresql" else utcnow()
        s.execute(insert(Sweep.__table__).values(
            id=sweep_id, owner=owner, name=name, tags=tags, base=base, grid=grid, starts=starts,
            n_starts=n_starts, jobs=count, tolerance=tolerance, created_at=now,
            idempotency_key=scoped_key(owner, idempotency_key), request_digest=request_digest))
        ids = insert_jobs(s, owner, jobs, now, sweep_id)
    record = SweepRecord(id=sweep_id, owner=owner, name=name, tags=dict(tags), base=base, grid=grid,
                         starts=starts, n_starts=n_starts, jobs=count, tolerance=tolerance, created_at=as_utc(now))
    return record, ids


def sweep_for_key(db: Database, owner: str, idempotency_key: str, request_digest: str) -> SweepRecord | None:
    """The sweep ``owner`` made with this Idempotency-Key, if any; Conflict if it was made from
    another request (another ``request_digest``)."""
    with db.session() as s:
        row = s.scalar(select(Sweep).where(Sweep.idempotency_key == scoped_key(owner, idempotency_key)))
        if row is None:
            return None
        if row.request_digest != request_digest:
            raise Conflict(f"this Idempotency-Key was already used for a different sweep request (sweep {row.id})")
        return _sweep_record(row)


def get_sweep(db: Database, sweep_id: str, owner: str | None = None) -> SweepRecord:
    """The sweep; with ``owner``, only if it is that owner's (another's is NotFound, as if absent)."""
    with db.session() as s:
        return _sweep_record(owned_row(s, Sweep, sweep_id, owner, _SWEEP_ID, "sweep"))


def counts(db: Database, sweep_id: str) -> dict[str, int]:
    """Jobs of the sweep by status, every status present (0 where none)."""
    out = {status.value: 0 for status in JobStatus}
    with db.session() as s:
        for status, n in s.execute(select(Job.status, func.count()).where(Job.sweep_id == sweep_id)
                                   .group_by(Job.status)):
            out[status] = int(n)
    return out


# --- cursors ------------------------------------------------------------------------------------

def _encode(kind: str, n: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{n}".encode()).decode()


def decode_cursor(cursor: str | None, kind: str) -> int:
    """The position a cursor of ``kind`` holds (-1 without one); ValueError for anything this
    service did not hand out for that kind."""
    if cursor is None:
        return -1
    raw = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
    got, _, n = raw.partition(":")
    if got != kind or not re.fullmatch(r"[0-9]{1,10}", n):
        raise ValueError("not a cursor of this listing")
    return int(n)


# --- the summary --------------------------------------------------------------------------------

def _f_order() -> list[Any]:
    """Ascending final f: finite numbers and infinities first, then NaN, then jobs with no result
    yet (f is stored as a JSON number, or the strings NaN, Infinity, -Infinity)."""
    text = Job.result["f"].as_string()
    rank = case((text.is_(None), 2), (text == "NaN", 1), else_=0)
    value = case((text == "Infinity", bindparam("inf", math.inf)), (text == "-Infinity", bindparam("ninf", -math.inf)),
                 (text == "NaN", None), else_=Job.result["f"].as_float())
    return [rank, value, Job.sweep_index]


def _number(db: Database, key: str) -> Any:
    """A number of the result: PostgreSQL casts the JSON text (NaN and the infinities included);
    SQLite's json_extract gives the REAL itself, or the text of a non-finite value."""
    if db.dialect == "sqlite":
        return func.json_extract(Job.result, f"$.{key}")
    return Job.result[key].as_float()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)  # float("NaN"), float("-Infinity") are the numbers


def summary(db: Database, sweep: SweepRecord, limit: int, cursor: str | None, sort: str,
            best_minimum: Callable[[dict[str, Any], int], float | None]) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the sweep's jobs, each {id, index, status, f, stop_reason, distance_to_minimum,
    steps_to_tolerance}, in ``sort`` order (created: the sweep's order; f: ascending final f);
    ``best_minimum(spec, numel)`` gives the known minimum (None when there is none) of a spec
    holding the job's ``objective`` and stored ``data`` (references to its tensors, if any).
    Raises ValueError for a cursor this service did not make for that sort."""
    position = decode_cursor(cursor, sort)
    # Numbers as floats (SQLite's JSON text of an extracted number keeps only 15 digits); the
    # strings "NaN", "Infinity", "-Infinity" as the floats they stand for.
    query = select(Job.id, Job.sweep_index, Job.status, _number(db, "f"), Job.result["stop_reason"].as_string(),
                   _number(db, "distance_to_minimum"), Job.spec["objective"], Job.shape, Job.spec["data"]
                   ).where(Job.sweep_id == sweep.id)
    if sort == "created":
        query = query.where(Job.sweep_index > position).order_by(Job.sweep_index).limit(limit + 1)
    else:
        query = query.order_by(*_f_order()).offset(max(position, 0)).limit(limit + 1)
    with db.session() as s:
        rows = s.execute(query).all()
    page = rows[:limit]
    minima: dict[float, list[str]] = {}
    for row in page:  # outside the transaction: an objective of data reads its tensors first
        fmin = best_minimum({"objective": row[6], "data": row[8]}, math.prod(row[7]))
        if fmin is not None:
            minima.setdefault(fmin, []).append(row[0])
    reached: dict[str, int] = {}
    with db.session() as s:
        for fmin, ids in minima.items():  # within tolerance: |f - fmin| <= tolerance (not -inf, say)
            near = HistoryRow.f.between(fmin - sweep.tolerance, fmin + sweep.tolerance)
            reached.update(s.execute(select(HistoryRow.job_id, func.min(HistoryRow.step))
                                     .where(HistoryRow.job_id.in_(ids), near)
                                     .group_by(HistoryRow.job_id)).all())
    items = [{"id": row[0], "index": row[1], "status": row[2], "f": _float(row[3]), "stop_reason": row[4],
              "distance_to_minimum": _float(row[5]), "steps_to_tolerance": reached.get(row[0])} for row in page]
    if len(rows) <= limit:
        return items, None
    if sort == "created":
        return items, _encode(sort, page[-1][1])
    return items, _encode(sort, max(position, 0) + limit)


def list_sweep_jobs(db: Database, sweep_id: str, limit: int, cursor: str | None) -> tuple[list[JobRecord], str | None]:
    """The sweep's jobs in its order, ``limit`` at a time. ValueError for a bad cursor."""
    position = decode_cursor(cursor, "jobs")
    with db.session() as s:
        rows = list(s.scalars(select(Job).where(Job.sweep_id == sweep_id, Job.sweep_index > position)
                              .order_by(Job.sweep_index).limit(limit + 1)))
        records = [(job_record(r), r.sweep_index) for r in rows]
    page = records[:limit]
    return [r for r, _ in page], (_encode("jobs", page[-1][1]) if len(records) > limit else None)


def cancel_sweep(db: Database, sweep_id: str) -> int:
    """Cancel every queued job of the sweep at once (one UPDATE) and ask every running one to
    stop; returns how many were queued. A cancelled job keeps only what it stored of its
    reservation (nothing, for a job that never ran)."""
    now = clock(db.dialect)
    jobs = Job.__table__
    with db.session() as s:
        cancelled = [r[0] for r in s.execute(
            update(jobs).where(jobs.c.sweep_id == sweep_id, jobs.c.status == JobStatus.QUEUED)
            .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, worker=None)
            .returning(jobs.c.id))]
        s.execute(update(jobs).where(jobs.c.sweep_id == sweep_id, jobs.c.status == JobStatus.RUNNING)
                  .values(cancel_requested=True))
        if cancelled:
            counters.ended(s, counters.API_SOURCE, JobStatus.CANCELLED, len(cancelled))
            # finished_at == now: the jobs this very statement cancelled (one timestamp per
            # transaction). Those that never stored a row give their whole reservation back; the
            # few that did (released by a stopping worker) keep what they stored.
            just_cancelled = and_(jobs.c.sweep_id == sweep_id, jobs.c.status == JobStatus.CANCELLED,
                                  jobs.c.finished_at == now)
            stored = exists().where(HistoryRow.job_id == jobs.c.id)
            s.execute(update(jobs).where(just_cancelled, ~stored).values(reserved_values=0))
            for job_id in s.scalars(select(jobs.c.id).where(just_cancelled, stored)):
                settle_reservation(s, job_id)
    return len(cancelled)
