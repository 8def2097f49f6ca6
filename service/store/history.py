"""Per-step histories: fenced writes of chunks and streamed, keyset-paginated reads of their rows.

A chunk's rows, its checkpoint (when one is due) and the lease renewal commit in one
transaction, so after any crash the stored history reaches at least as far as the stored
checkpoint. Rows past the checkpoint are deleted when a job is claimed again
(``jobs.claim_job``) and redone by the resumed run, and a write retried after an ambiguous
commit replaces its rows (``chunks.write_once``): no step is ever stored twice or skipped.

The rows are stored as chunks of steps (``service.store.chunks``); every read here finds the
chunks it needs by the primary key (job, first step), so none depends on the planner's
statistics, and reads rows of them in numpy (pages) or in SQL (exports and points on PostgreSQL).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from sqlalchemy import LargeBinary, and_, bindparam, func, select, update
from sqlalchemy import text as sql_text

from service.rows import HistoryRows, Progress
from service.store import chunks, counters, pgcopy
from service.store.chunks import write_many, write_once, write_rows
from service.store.db import Database, LeaseLost
from service.store.jobs import renew_jobs
from service.store.models import HistoryChunk, Job

__all__ = ["PAGE_BYTES", "ChunkWrite", "HistoryRows", "choose_steps", "count_rows", "iter_history", "iter_text",
           "iter_point_texts", "page_rows", "save_chunk", "save_chunks", "text_width_ok", "write_rows"]


def save_chunk(db: Database, job_id: str, worker: str, rows: HistoryRows, checkpoint: bytes | None,
               checkpoint_step: int | None, lease_seconds: float, progress: Progress | None = None) -> bool:
    """Write a chunk, move the checkpoint, renew the lease and set the job's progress, atomically
    and fenced on the worker holding the job. Returns whether a cancel was requested. Raises LeaseLost."""
    chunk = ChunkWrite(job_id, rows, checkpoint, checkpoint_step, progress)
    cancel = save_chunks(db, worker, [chunk], lease_seconds).get(job_id)
    if cancel is None:
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")
    return cancel


@dataclass(frozen=True)
class ChunkWrite:
    """One job's chunk: its rows, the checkpoint (with its step) to move to, if one is due, and
    where the run stands."""

    job_id: str
    rows: HistoryRows
    checkpoint: bytes | None = None
    checkpoint_step: int | None = None
    progress: Progress | None = None


def save_chunks(db: Database, worker: str, writes: Sequence[ChunkWrite], lease_seconds: float) -> dict[str, bool]:
    """``save_chunk`` for the chunks of many jobs (a batch's), in one transaction; returns {job
    id: cancel requested} for the jobs ``worker`` still holds. A job missing from the answer was
    lost: none of its rows were written."""
    def transaction(s: Any, replace: bool) -> dict[str, bool]:
        progress = {c.job_id: c.progress for c in writes if c.progress is not None}
        held = renew_jobs(db, [c.job_id for c in writes], worker, lease_seconds, session=s, progress=progress)
        mine = [(c.job_id, c.rows) for c in writes if c.job_id in held]
        counters.add(s, worker, {(counters.HISTORY_ROWS, ""): write_many(s, mine, replace)})
        moved = [{"b_id": c.job_id, "b_checkpoint": c.checkpoint, "b_step": c.checkpoint_step}
                 for c in writes if c.job_id in held and c.checkpoint is not None]
        if moved:
            jobs = Job.__table__
            s.execute(update(jobs).where(jobs.c.id == bindparam("b_id"))
                      .values(checkpoint=bindparam("b_checkpoint"), checkpoint_step=bindparam("b_step")), moved)
        return held

    return write_once(db, transaction)


# A page of a history read holds about this many bytes of float values (x and grad rows of the
# job's size), and at least one row: a job with a million elements reads one row at a time. The
# driver's own form of a page (Python floats, array text) takes several times this while it is
# read, still bounded whatever the job's size: two exports of a million-element x measured
# about 110 MiB each over an idle API (benchmarks/export_rss.py).
PAGE_BYTES = 8 * 1024 * 1024
# Per-row bytes besides x and grad (step, f, grad_norm, lr), for the page size arithmetic.
ROW_OVERHEAD_BYTES = 64


def page_rows(numel: int, with_x: bool, with_grad: bool, rows_per_page: int = 1000,
              page_bytes: int = PAGE_BYTES) -> int:
    """Rows per page for a job of ``numel`` elements: ``page_bytes`` of values, 1 to ``rows_per_page``."""
    per_row = ROW_OVERHEAD_BYTES + 8 * max(0, numel) * (int(with_x) + int(with_grad))
    return max(1, min(rows_per_page, page_bytes // per_row))


def iter_history(db: Database, job_id: str, start: int = 0, limit: int | None = None, every: int = 1,
                 with_x: bool = True, with_grad: bool = True, rows_per_page: int = 1000,
                 numel: int | None = None, page_bytes: int = PAGE_BYTES,
                 steps: Sequence[int] | None = None) -> Iterator[HistoryRows]:
    """Rows with step >= ``start`` (and step % every == 0), in step order, at most ``limit``, as
    blocks each read in a short transaction, so memory stays bounded: a block holds at most
    ``rows_per_page`` rows and about ``page_bytes`` of x/grad values (at least one row).
    ``numel`` is the job's element count (the width of x and grad); when not given it is read
    from the job (only if x or grad is asked for). With ``steps`` (ascending), only the rows of
    those steps are read (``start``, ``every`` and ``limit`` still apply)."""
    if numel is None and (with_x or with_grad):
        numel = _job_numel(db, job_id)
    page = page_rows(numel or 0, with_x, with_grad, rows_per_page, page_bytes)
    if steps is not None:
        wanted = [int(v) for v in steps if int(v) >= start and int(v) % every == 0]
        blocks: Iterator[HistoryRows] = _blocks_at(db, job_id, wanted, page, with_x, with_grad)
    else:
        # Chunks follow the writes (a slow job's hold a few rows) and ``every`` skips rows, so a
        # read takes as many chunks as fit ``page_bytes`` (each holds at most CHUNK_BYTES of
        # values, or one row), not just enough full ones for a page.
        per_chunk = chunks.rows_per_chunk((numel or 0) * (int(with_x) + int(with_grad)))
        per_read = page if per_chunk == 1 else max(-(-page // per_chunk), min(page, page_bytes // chunks.CHUNK_BYTES))
        blocks = _blocks_from(db, job_id, start, every, max(1, per_read), with_x, with_grad)
    yield from _pages(blocks, page, limit)


def _pages(blocks: Iterator[HistoryRows], page: int, limit: int | None) -> Iterator[HistoryRows]:
    """The rows of ``blocks`` in pages of ``page`` rows (the last one shorter), at most ``limit``."""
    pending: list[HistoryRows] = []
    held, remaining = 0, limit
    for block in blocks:
        if remaining is not None and len(block) > remaining:
            block = chunks.select_rows(block, slice(0, remaining))
        if not len(block):
            continue
        pending.append(block)
        held += len(block)
        if remaining is not None:
            remaining -= len(block)
        while held >= page:
            rows = chunks.concat(pending)
            yield chunks.select_rows(rows, slice(0, page))
            pending = [chunks.select_rows(rows, slice(page, None))] if len(rows) > page else []
            held -= page
            del rows
        if remaining == 0:
            break
    if held:
        yield chunks.concat(pending)


def _chunk_at(job_id: str, step: Any) -> Any:
    """The first step of the chunk holding ``step`` (or the last before it): a walk of the key."""
    c = HistoryChunk.__table__.c
    return select(func.max(c.first_step)).where(c.job_id == job_id, c.first_step <= step).scalar_subquery()


def _blocks_from(db: Database, job_id: str, start: int, every: int, per_read: int, with_x: bool,
                 with_grad: bool) -> Iterator[HistoryRows]:
    """The job's rows from ``start`` on (multiples of ``every``), ``per_read`` chunks a transaction."""
    c = HistoryChunk.__table__.c
    lower: Any = func.coalesce(_chunk_at(job_id, start), start)
    while True:
        with db.session() as s:
            found = chunks.read_chunks(s, and_(c.job_id == job_id, c.first_step >= lower), with_x, with_grad, per_read)
        for _, rows in found:
            keep = rows.steps >= start
            if every > 1:
                keep &= rows.steps % every == 0
            yield rows if keep.all() else chunks.select_rows(rows, keep)
        if len(found) < per_read:
            return
        lower = int(found[-1][1].steps[0]) + 1


def _blocks_at(db: Database, job_id: str, wanted: list[int], page: int, with_x: bool,
               with_grad: bool) -> Iterator[HistoryRows]:
    """The rows of the steps ``wanted`` (ascending) that are stored, ``page`` steps a transaction."""
    for first in range(0, len(wanted), page):
        part = np.array(wanted[first:first + page], dtype=np.int64)
        with db.session() as s:
            found = [rows for _, rows in _chunks_holding(s, job_id, part, with_x, with_grad)]
        for rows in found:
            keep = np.isin(rows.steps, part)
            if keep.any():
                yield chunks.select_rows(rows, keep)


def _chunks_holding(s: Any, job_id: str, steps: np.ndarray, with_x: bool = True,
                    with_grad: bool = True) -> list[tuple[str, HistoryRows]]:
    """The chunks that may hold ``steps``: for each, the chunk starting at or before it (one
    probe of the key each), read once."""
    c = HistoryChunk.__table__.c
    if s.bind.dialect.name == "postgresql":
        sql = ("SELECT DISTINCT h.first_step FROM unnest(%(steps)s::integer[]) AS t(v) CROSS JOIN LATERAL "
               "(SELECT first_step FROM history_chunks WHERE job_id = %(job)s AND first_step <= t.v "
               "ORDER BY first_step DESC LIMIT 1) AS h")
        starts = s.connection().exec_driver_sql(sql, {"job": job_id, "steps": steps.tolist()}).scalars().all()
    else:
        sql = ("SELECT DISTINCT (SELECT max(first_step) FROM history_chunks WHERE job_id = ? AND first_step <= t.value) "
               "FROM json_each(?) AS t")
        starts = s.connection().exec_driver_sql(sql, (job_id, json.dumps(steps.tolist()))).scalars().all()
    starts = [int(v) for v in starts if v is not None]
    if not starts:
        return []
    return chunks.read_chunks(s, and_(c.job_id == job_id, c.first_step.in_(starts)), with_x, with_grad)


def _job_numel(db: Database, job_id: str) -> int:
    with db.session() as s:
        shape = s.scalar(select(Job.shape).where(Job.id == job_id))
    return math.prod(shape) if shape else 0


def count_rows(db: Database, job_id: str) -> int:
    with db.session() as s:
        return chunks.rows_of(s, [job_id]).get(job_id, 0)


# -- Exports formatted by PostgreSQL ---------------------------------------------------------------

# The widest x (+ grad) whose rows PostgreSQL formats itself (one SQL expression per value).
TEXT_MAX_WIDTH = 64
# A block of an export holds about this many characters of text (and at most TEXT_BLOCK_ROWS rows).
TEXT_BLOCK_CHARS = 2 * 1024 * 1024
TEXT_BLOCK_ROWS = 20_000
# Characters per value, for the block size arithmetic (repr of a random double: about 19).
_CHARS_PER_VALUE = 24


def text_width_ok(db: Database, width: int) -> bool:
    """Whether an export with ``width`` x/grad values a row is formatted by the database."""
    return db.dialect == "postgresql" and width <= TEXT_MAX_WIDTH


def iter_text(db: Database, job_id: str, fmt: str, fields: list[str], shape: list[int], start: int = 0,
              limit: int | None = None, every: int = 1, stride: int = 1, ahead: int = 0) -> Iterator[str]:
    """The rows of an export as the API's text, formatted by PostgreSQL: ``fmt`` "csv" gives
    ``serialize.csv_line`` lines, "ndjson" the ``serialize.json_row`` objects, each with its
    newline. Rows are chosen as ``iter_history`` chooses them, and read in blocks of about
    ``TEXT_BLOCK_CHARS``, each one short query of its own. A block is a range of steps bounded
    on both sides (``stride`` is the job's recording interval, so that a range holds about as
    many rows as a block is sized for), so each is an index range scan whatever the planner's
    statistics say. Without a ``limit`` the blocks are known in advance, and ``ahead`` threads
    read the next ones while one is handed out (at most ``ahead + 1`` blocks held)."""
    numel = math.prod(shape)
    width = numel * (int("x" in fields) + int("grad" in fields))
    line = pgcopy.csv_line_sql(fields, numel) if fmt == "csv" else pgcopy.json_line_sql(fields, shape, numel)
    rows = max(1, min(TEXT_BLOCK_ROWS, TEXT_BLOCK_CHARS // (_CHARS_PER_VALUE * (4 + width))))
    columns = ", ".join(pgcopy.text_columns(fields, numel))
    where = "step >= %(lo)s AND step < %(hi)s"
    if every > 1:
        where += " AND step %% %(every)s = 0"
    # The innermost query reads the rows in step order, the middle one makes each row's text and
    # the aggregate joins them in the order it is given them (its input is the ordered subquery;
    # an ORDER BY inside string_agg would sort every block again).
    statement = (f"SELECT string_agg(line, '') AS text, max(step), count(*), {_PG_FOLLOWING}"
                 f" FROM (SELECT step, {line} || E'\\n' AS line FROM (SELECT {columns} FROM {_PG_ROWS} WHERE {where} "
                 "ORDER BY step LIMIT %(n)s OFFSET 0) AS t) AS s")
    span = rows * max(1, every) * max(1, stride)

    def read(params: dict[str, Any]) -> tuple[str | None, int, Any]:
        with db.session() as s:
            conn = s.connection()
            conn.exec_driver_sql("SET LOCAL extra_float_digits = 1")  # the shortest exact text
            result = conn.exec_driver_sql(statement, {"job": job_id, "every": every, **params}).one()
        text = None if result[0] is None else pgcopy.unmark(result[0])
        return text, int(result[2]), result[3], result[1]

    if limit is None:
        c = HistoryChunk.__table__.c
        with db.session() as s:
            first = s.scalar(select(c.first_step).where(c.job_id == job_id).order_by(c.first_step).limit(1))
            last = s.scalar(select(c.last_step).where(c.job_id == job_id).order_by(c.first_step.desc()).limit(1))
        if first is None or last < start:
            return
        lo, hi = max(start, int(first)), int(last)
        planned: Iterator[dict[str, Any]] = ({"lo": first, "hi": first + span, "n": rows}
                                             for first in range(lo, hi + 1, span))
    else:
        yield from _text_until(read, start, limit, rows, span, every)
        return
    for params, (text, count, _, last) in _read_ahead(read, planned, ahead):
        if text is not None:
            yield text
        del text
        while count == params["n"]:
            # a full block: the range may hold more rows than the job's recording interval
            # promised (the block is cut at ``n`` rows); read the rest of it before going on
            params = {**params, "lo": int(last) + 1}
            text, count, _, last = read(params)
            if text is not None:
                yield text
            del text


# PostgreSQL: the job's rows in [%(lo)s, %(hi)s) as a table of the old ``history`` shape (step, f,
# grad_norm, lr, x, grad), from the chunks that hold them: those from the one holding ``lo`` up to
# the last starting before ``hi``, found by the primary key.
_PG_ROWS = ("(SELECT u.step, u.f, u.grad_norm, u.lr, c.x[(u.i - 1) * c.width + 1 : u.i * c.width] AS x, "
            "c.grad[(u.i - 1) * c.width + 1 : u.i * c.width] AS grad FROM history_chunks AS c CROSS JOIN LATERAL "
            "unnest(c.steps, c.f, c.grad_norm, c.lr) WITH ORDINALITY AS u(step, f, grad_norm, lr, i) "
            "WHERE c.job_id = %(job)s AND c.first_step < %(hi)s AND c.first_step >= coalesce((SELECT max(first_step) "
            "FROM history_chunks WHERE job_id = %(job)s AND first_step <= %(lo)s), %(lo)s)) AS history")
# PostgreSQL: the first stored step at or after %(hi)s: in the chunk holding it, or the next one's first.
_PG_FOLLOWING = ("coalesce((SELECT min(v) FROM history_chunks AS c CROSS JOIN LATERAL unnest(c.steps) AS v "
                 "WHERE c.job_id = %(job)s AND v >= %(hi)s AND c.first_step = (SELECT max(first_step) "
                 "FROM history_chunks WHERE job_id = %(job)s AND first_step <= %(hi)s)), "
                 "(SELECT min(first_step) FROM history_chunks WHERE job_id = %(job)s AND first_step > %(hi)s))")


def _text_until(read: Any, start: int, limit: int, rows: int, span: int, every: int) -> Iterator[str]:
    """Blocks one after another, up to ``limit`` rows: each next range starts at the first
    stored step past the last one."""
    remaining, cursor = limit, start
    while remaining > 0:
        size = min(rows, remaining)
        reach = max(1, span * size // rows)  # a short block reads a short range of steps
        text, count, following, last = read({"lo": cursor, "hi": cursor + reach, "n": size})
        if count:
            yield text
            remaining -= count
        del text
        if count == size:  # a full block: the rest of its range comes next
            cursor = int(last) + 1
            continue
        if following is None:
            return
        cursor = max(int(following), cursor + reach)
        if every > 1:
            cursor = -(-cursor // every) * every


def _pg_at(names: Sequence[str], outer: str | None = None) -> str:
    """PostgreSQL: the columns ``names`` (or the select list ``outer`` of them, as ``h``) of the
    job's rows at the steps ``%(steps)s`` that are stored, in step order: for each step, one probe
    of the primary key (the chunk starting at or before it, a LATERAL subquery with a LIMIT, which
    the planner never flattens into a scan of the job's chunks) and a search of that chunk's steps."""
    outer = outer or ", ".join(f"h.{name}" for name in names)
    return (f"SELECT {outer} FROM unnest(%(steps)s::integer[]) AS t(v) CROSS JOIN LATERAL (SELECT t.v AS step, "
            "c.f[c.o] AS f, c.grad_norm[c.o] AS grad_norm, c.lr[c.o] AS lr, "
            "c.x[(c.o - 1) * c.width + 1 : c.o * c.width] AS x, c.grad[(c.o - 1) * c.width + 1 : c.o * c.width] AS grad "
            "FROM (SELECT hc.f, hc.grad_norm, hc.lr, hc.x, hc.grad, hc.width, array_position(hc.steps, t.v) AS o "
            "FROM history_chunks AS hc WHERE hc.job_id = %(job)s AND hc.first_step <= t.v "
            "ORDER BY hc.first_step DESC LIMIT 1) AS c WHERE c.o IS NOT NULL) AS h ORDER BY h.step")


def iter_point_texts(db: Database, job_id: str, points: int, fields: Sequence[str], numel: int, start: int = 0,
                     every: int = 1, stride: int = 1, sep: str = ",", rows_per_page: int = 1000,
                     page_bytes: int = PAGE_BYTES) -> Iterator[list[tuple[Any, ...]]]:
    """PostgreSQL only: the rows of the steps ``choose_steps`` chooses, in step order, in pages
    sized as ``iter_history`` sizes them, each row its step and then, for each other name of
    ``fields``, PostgreSQL's shortest text of the value (x and grad: their values' texts joined
    by ``sep``; None where the row has none). Each row is a probe of the chunks' primary key, the
    steps are chosen and the first page read in one transaction, and no value is converted on the way:
    the API writes this text as it is, rewriting only the few values whose text is not Python's
    ``repr``."""
    names = [name for name in fields if name != "step"]
    texts = [f"array_to_string(h.{name}, %(sep)s)" if name in ("x", "grad") else f"h.{name}::text" for name in names]
    sql = _pg_at(["step", *names], ", ".join(["h.step", *texts]))
    page = page_rows(numel, "x" in names, "grad" in names, rows_per_page, page_bytes)

    def read(s: Any, steps: list[int]) -> list[tuple[Any, ...]]:
        return s.connection().exec_driver_sql(sql, {"job": job_id, "steps": steps, "sep": sep}).cursor.fetchall()

    with db.session() as s:
        wanted = _plan(s, True, job_id, points, start, every, stride)
        if len(wanted) <= page:  # one page: its rows read where they should be, only the gaps searched for
            rows = read(s, [g for g, _, _ in wanted])
            found = {row[0] for row in rows}
            gaps = sorted(set(_resolved(s, job_id, wanted, found, every, True)) - found)
            steps: list[int] = []
            if gaps:
                rows = sorted(rows + read(s, gaps), key=lambda row: row[0])
        else:
            steps = _resolved(s, job_id, wanted, set(_stored(s, job_id, [g for g, _, _ in wanted], True)), every, True)
            rows = read(s, steps[:page])
    if rows:
        yield rows
    del rows
    for first in range(page, len(steps), page):
        with db.session() as s:
            _settings(s, by_index=False)
            rows = read(s, steps[first:first + page])
        yield rows
        del rows


def _settings(s: Any, by_index: bool = True) -> None:
    """PostgreSQL, for the transaction: floats as their shortest exact text and, ``by_index``, the
    history read by ordered walks of its primary key, whatever the statistics of the moment say.
    One statement: on a busy machine every round trip counts."""
    settings = {"extra_float_digits": "1"}
    if by_index:
        settings.update(enable_seqscan="off", enable_bitmapscan="off")
    s.execute(sql_text("SELECT " + ", ".join(f"set_config('{k}', '{v}', true)" for k, v in settings.items())))


def _read_ahead(read: Any, planned: Iterator[dict[str, Any]], ahead: int) -> Iterator[Any]:
    """``(params, read(params))`` for each of ``planned``, in order, with up to ``ahead`` reads
    running on threads of their own while a result is handed out. Closing the generator cancels
    the rest."""
    if ahead <= 0:
        for params in planned:
            yield params, read(params)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="history-read")
    pending: deque = deque()
    try:
        for params in planned:
            pending.append((params, pool.submit(read, params)))
            if len(pending) > ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def choose_steps(db: Database, job_id: str, points: int, start: int = 0, every: int = 1, stride: int = 1) -> list[int]:
    """At most ``points`` recorded steps at or after ``start`` (and multiples of ``every``), spread
    evenly over the steps: the first and the last always (one point: the last), and for each of
    the targets evenly spaced between them the first such step at or after it (deduplicated).

    ``stride`` is the job's ``record.every``: its rows are the multiples of it and its last step,
    so each target's step is known by arithmetic and looked up by primary key, one index probe a
    point whatever the history's length or width. Only a target whose step is missing (a gap) is
    searched for, between it and the next target. With ``stride`` 1 the answer holds for rows at
    any steps; with a larger one, a row off its grid (the engine writes none) may be passed over."""
    with db.session() as s:
        return _choose(s, db.dialect == "postgresql", job_id, points, start, every, stride)


def _choose(s: Any, postgres: bool, job_id: str, points: int, start: int, every: int, stride: int) -> list[int]:
    """``choose_steps`` in the transaction of ``s``."""
    wanted = _plan(s, postgres, job_id, points, start, every, stride)
    return _resolved(s, job_id, wanted, set(_stored(s, job_id, [g for g, _, _ in wanted], postgres)), every, postgres)


def _plan(s: Any, postgres: bool, job_id: str, points: int, start: int, every: int,
          stride: int) -> list[tuple[int, int, int]]:
    """For each target whose range (up to the next target) holds a step of the job's grid: that
    step, where its row should be, the target and the range's end. On PostgreSQL, ``_settings``
    for the transaction first."""
    if postgres:
        _settings(s)
    lo, hi = _step_range(s, job_id, start, every)
    if lo is None or hi is None:
        return []
    if points == 1 or lo == hi:
        return [(hi, hi, hi + 1)]
    if hi - lo + 1 <= points:
        targets = list(range(lo, hi + 1))
    else:
        targets = [lo + (i * (hi - lo)) // (points - 1) for i in range(points)]
    grid = math.lcm(max(1, stride), max(1, every))
    ends = targets[1:] + [hi + 1]
    guesses = [lo] + [-(-t // grid) * grid for t in targets[1:-1]] + [hi]
    return [(g, t, end) for g, t, end in zip(guesses, targets, ends) if g < end]


def _resolved(s: Any, job_id: str, wanted: list[tuple[int, int, int]], found: set[int], every: int,
              postgres: bool) -> list[int]:
    """The chosen steps, in order: the guesses of ``wanted`` that were ``found``, and for each
    that was not, the first stored step of its range (if any)."""
    missing = [(t, end) for g, t, end in wanted if g not in found]
    if missing:
        found = found | set(_first_in(s, job_id, missing, every, postgres))
    return sorted(found)


def _step_range(s: Any, job_id: str, start: int, every: int) -> tuple[int | None, int | None]:
    """The first and the last stored step at or after ``start`` that are multiples of ``every``:
    each found from the chunks at one end, walked by the primary key (more than one only where
    ``every`` skips whole chunks)."""
    c = HistoryChunk.__table__.c
    mine = c.job_id == job_id
    first = _find(s, and_(mine, c.first_step >= func.coalesce(_chunk_at(job_id, start), start)), c.first_step,
                  lambda steps: steps[(steps >= start) & (steps % every == 0)][:1])
    if first is None:
        return None, None
    last = _find(s, and_(mine, c.last_step >= start), c.first_step.desc(),
                 lambda steps: steps[(steps >= start) & (steps % every == 0)][-1:])
    return first, last


def _find(s: Any, where: Any, order: Any, pick: Any, per_read: int = 16) -> int | None:
    """The first step ``pick`` (steps -> an array of at most one) gives of the chunks ``where``
    chooses, taken ``per_read`` at a time in ``order``; None if none gives one."""
    c = HistoryChunk.__table__.c
    postgres = s.bind.dialect.name == "postgresql"
    column = func.array_send(c.steps, type_=LargeBinary()) if postgres else c.steps
    offset = 0
    while True:
        found = s.execute(select(column).where(where).order_by(order).offset(offset).limit(per_read)).scalars().all()
        for value in found:
            steps = chunks.pg_ints(value) if postgres else np.array(json.loads(value), dtype=np.int64)
            chosen = pick(steps)
            if len(chosen):
                return int(chosen[0])
        if len(found) < per_read:
            return None
        offset += per_read


def _stored(s: Any, job_id: str, steps: list[int], postgres: bool) -> list[int]:
    """Which of ``steps`` the job has rows for: a probe of the key each."""
    if not steps:
        return []
    if postgres:
        found = s.connection().exec_driver_sql(_pg_at(["step"]), {"job": job_id, "steps": steps}).scalars()
        return [int(v) for v in found]
    wanted = np.array(steps, dtype=np.int64)
    held = [rows.steps[np.isin(rows.steps, wanted)] for _, rows in _chunks_holding(s, job_id, wanted, False, False)]
    return sorted(int(v) for part in held for v in part)


def _first_in(s: Any, job_id: str, ranges: list[tuple[int, int]], every: int, postgres: bool) -> list[int]:
    """For each [low, high) of ``ranges``, the first stored step in it that is a multiple of
    ``every``, if any (a gap in the history: its chunks walked by the key)."""
    c = HistoryChunk.__table__.c
    out = []
    for lo, hi in ranges:
        where = and_(c.job_id == job_id, c.first_step < hi, c.first_step >= func.coalesce(_chunk_at(job_id, lo), lo))
        step = _find(s, where, c.first_step, lambda steps, lo=lo, hi=hi: steps[(steps >= lo) & (steps < hi)
                                                                                  & (steps % every == 0)][:1])
        if step is not None:
            out.append(step)
    return out
