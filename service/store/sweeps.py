"""Sweeps: many jobs stored in one transaction, their counts, a summary page, and cancelling them.

A sweep's jobs are ordinary rows of ``jobs`` carrying ``sweep_id`` and ``sweep_index`` (the job's
place in the sweep); the ``sweeps`` row keeps the request (base, grid, starts, tolerance).
"""
from __future__ import annotations

import base64
import math
import re
import uuid
from datetime import datetime
from typing import Any, Callable, Iterable

from sqlalchemy import Float, and_, bindparam, case, cast, exists, func, insert, literal, or_, select, update

from service.config import Quotas
from service.status import StopReason
from service.store import counters, data
from service.store.db import Conflict, Database, as_utc, clock, owned_row, utcnow
from service.store.jobs import insert_jobs, job_record, scoped_key
from service.store.models import HistoryChunk, Job, Sweep, history_rows
from service.store.quotas import check_quotas, settle_reservation
from service.store.records import JobRecord, SweepRecord
from service.status import JobStatus

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
    return counts_of(db, [sweep_id])[sweep_id][0]


def counts_of(db: Database, sweep_ids: list[str]) -> dict[str, tuple[dict[str, int], int]]:
    """For each of ``sweep_ids``, in one query: ``counts``, and how many of its jobs diverged
    (succeeded by stopping on divergence: counted in ``succeeded`` too)."""
    out = {sweep_id: ({status.value: 0 for status in JobStatus}, 0) for sweep_id in sweep_ids}
    if not sweep_ids:
        return out
    with db.session() as s:
        for sweep_id, status, n, bad in s.execute(
                select(Job.sweep_id, Job.status, func.count(), func.sum(case((_diverged(), 1), else_=0)))
                .where(Job.sweep_id.in_(sweep_ids)).group_by(Job.sweep_id, Job.status)):
            by_status, diverged = out[sweep_id]
            by_status[status] = int(n)
            out[sweep_id] = (by_status, diverged + int(bad or 0))
    return out


def _f_text() -> Any:
    return Job.result["f"].as_string()


def _finite_f() -> Any:
    """The job has a final f that is a finite number (non-finite ones are stored as strings)."""
    return and_(Job.result["f"].as_string().is_not(None), _f_text().not_in(NON_FINITE))


def _diverged() -> Any:
    """A job that succeeded by stopping on divergence, or with a non-finite final f."""
    return and_(Job.status == JobStatus.SUCCEEDED,
                or_(Job.result["stop_reason"].as_string() == StopReason.DIVERGED.value, _f_text().in_(NON_FINITE)))


NON_FINITE = ("NaN", "Infinity", "-Infinity")


# --- listing sweeps -------------------------------------------------------------------------------

def list_sweeps(db: Database, limit: int, cursor: str | None, owner: str | None = None) -> tuple[list[SweepRecord], str | None]:
    """Sweeps newest first (only ``owner``'s when given), ``limit`` at a time; returns (page, next
    cursor or None). ValueError for a cursor this service did not make."""
    query = select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit + 1)
    if owner is not None:
        query = query.where(Sweep.owner == owner)
    if cursor is not None:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        kind, _, rest = raw.partition(":")
        stamp, _, sweep_id = rest.partition("|")
        if kind != "sweeps" or not _SWEEP_ID.fullmatch(sweep_id):
            raise ValueError("not a cursor of this listing")
        at = datetime.fromisoformat(stamp)
        query = query.where(or_(Sweep.created_at < at, and_(Sweep.created_at == at, Sweep.id < sweep_id)))
    with db.session() as s:
        records = [_sweep_record(row) for row in s.scalars(query)]
    page = records[:limit]
    if len(records) <= limit:
        return page, None
    last = page[-1]
    return page, base64.urlsafe_b64encode(f"sweeps:{last.created_at.isoformat()}|{last.id}".encode()).decode()


# --- the grid -------------------------------------------------------------------------------------

STATS = ("min", "median", "mean")


def _axis(sweep: SweepRecord, key: str | None) -> tuple[Any, list[Any]]:
    """The SQL expression of a job's place along grid ``key`` (0 without one), and its values."""
    if key is None:
        return literal(0), [None]
    keys = [k for k, _ in sweep.grid]
    at = keys.index(key)
    stride = sweep.n_starts * math.prod(len(values) for _, values in sweep.grid[at + 1:])
    values = list(sweep.grid[at][1])
    return (Job.sweep_index // stride) % len(values), values


def grid(db: Database, sweep: SweepRecord, rows: str | None, cols: str | None, stat: str) -> dict[str, Any]:
    """Final f of ALL the sweep's jobs over two of its grid keys, computed in SQL: {rows, cols}
    (the keys' values; [None] for a key not given), and per cell ``cells`` (``stat`` of the finite
    final f of its succeeded jobs: min, median or mean; None without one), ``counts`` (its jobs,
    whatever their status), ``finite`` (the jobs ``cells`` is over) and ``diverged`` (succeeded
    by stopping on divergence, or with a non-finite f). ``rows`` and ``cols`` must be grid keys."""
    r, row_values = _axis(sweep, rows)
    c, col_values = _axis(sweep, cols)
    # Each job's result read once (a materialised CTE: the JSON is parsed once per row, not per use).
    raw_f = func.json_extract(Job.result, "$.f") if db.dialect == "sqlite" else Job.result["f"].as_string()
    base = select(r.label("r"), c.label("c"), Job.status.label("status"), raw_f.label("f"),
                  Job.result["stop_reason"].as_string().label("stop")).where(Job.sweep_id == sweep.id
                                                                             ).cte("cells").prefix_with("MATERIALIZED")
    bad = and_(base.c.status == JobStatus.SUCCEEDED, or_(base.c.stop == StopReason.DIVERGED.value, base.c.f.in_(NON_FINITE)))
    ranked = and_(base.c.status == JobStatus.SUCCEEDED, base.c.f.is_not(None), ~bad)
    # SQLite's json_extract gives the REAL itself (its text would keep 15 digits); PostgreSQL casts the text.
    number = base.c.f if db.dialect == "sqlite" else cast(base.c.f, Float)
    inner = select(base.c.r, base.c.c, case((ranked, number), else_=None).label("f"),
                   case((bad, 1), else_=0).label("bad")).subquery()
    # The median: the middle finite f of each cell (or the mean of the middle two), by its rank.
    cell = (inner.c.r, inner.c.c)
    ordered = select(inner, func.row_number().over(partition_by=cell, order_by=(inner.c.f.is_(None), inner.c.f)).label("k"),
                     func.count(inner.c.f).over(partition_by=cell).label("n")).subquery()
    o = ordered.c
    middle = case((and_(o.f.is_not(None), 2 * o.k >= o.n, 2 * o.k <= o.n + 2), o.f), else_=None)
    value = {"min": func.min(o.f), "mean": func.avg(o.f), "median": func.avg(middle)}[stat]
    cells = [[None] * len(col_values) for _ in row_values]
    counts = [[0] * len(col_values) for _ in row_values]
    finite = [[0] * len(col_values) for _ in row_values]
    diverged = [[0] * len(col_values) for _ in row_values]
    with db.session() as s:
        for i, j, n, m, bad, v in s.execute(select(o.r, o.c, func.count(), func.count(o.f), func.sum(o.bad), value)
                                            .group_by(o.r, o.c)):
            counts[i][j], finite[i][j], diverged[i][j], cells[i][j] = int(n), int(m), int(bad or 0), _float(v)
    return {"rows": row_values, "cols": col_values, "cells": cells, "counts": counts, "finite": finite,
            "diverged": diverged}


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
            near = history_rows.c.f.between(fmin - sweep.tolerance, fmin + sweep.tolerance)
            reached.update(s.execute(select(history_rows.c.job_id, func.min(history_rows.c.step))
                                     .where(history_rows.c.job_id.in_(ids), near)
                                     .group_by(history_rows.c.job_id)).all())
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
            stored = exists().where(HistoryChunk.job_id == jobs.c.id)
            s.execute(update(jobs).where(just_cancelled, ~stored).values(reserved_values=0))
            for job_id in s.scalars(select(jobs.c.id).where(just_cancelled, stored)):
                settle_reservation(s, job_id)
    return len(cancelled)
