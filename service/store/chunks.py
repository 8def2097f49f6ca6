"""History chunks: a job's recorded steps stored as arrays, one database row per chunk.

A chunk (``HistoryChunk``, table ``history_chunks``) holds consecutive recorded steps of one job:
their steps, f, gradient norms and learning rates as arrays and x and grad flattened. On
PostgreSQL the arrays are ``integer[]``/``double precision[]`` written with binary COPY (every
bit of every float kept, NaN and infinities too) and read back with ``array_send`` into numpy;
on SQLite they are JSON text (each float its shortest exact text, NaN as the string "NaN" and
infinities as ``1e999``/``-1e999``, so SQLite's own JSON functions read them: the view
``history_rows``), x and grad an array per row.

A chunk holds at most ``CHUNK_BYTES`` of values (at least one row), so on PostgreSQL a chunk of
a narrow job is one heap tuple of under 8 KB, stored inline and uncompressed (the table's
``toast_tuple_target``, revision 0017): a write is one tuple and one index entry per about 170
steps of a 2-parameter job, and a read of one step (``?step=N``, ``points=N``) is one index probe
and one tuple, with nothing to detoast. An engine chunk is split into as many as it needs.

A first write is a plain insert. Only a write retried after an ambiguous commit (the connection
dropped during COMMIT, so the chunks may already be there) replaces the job's rows from its first
step on; ``write_once`` does that retry when the plain insert meets a duplicate key.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import psycopg
from sqlalchemy import LargeBinary, and_, delete, func, literal_column, select
from sqlalchemy.exc import IntegrityError, OperationalError

from service.rows import HistoryRows
from service.store import pgcopy
from service.store.db import Database, one_of
from service.store.models import HistoryChunk

T = TypeVar("T")

# Bytes of values in one chunk: 4 for the step and 8 for each float of a row (f, grad_norm, lr,
# x and grad), so that a chunk's tuple (with its headers) stays under PostgreSQL's 8 KB page.
CHUNK_BYTES = 7_600
COLUMNS = "job_id, first_step, last_step, n_rows, width, steps, f, grad_norm, lr, x, grad"


def rows_per_chunk(values_per_row: int) -> int:
    """Rows in a full chunk whose rows hold ``values_per_row`` x and grad values."""
    return max(1, CHUNK_BYTES // (28 + 8 * values_per_row))


def split(rows: HistoryRows) -> list[HistoryRows]:
    """``rows`` as chunks of at most ``rows_per_chunk`` rows each (none for no rows)."""
    n = len(rows)
    size = rows_per_chunk(_width(rows.x) + _width(rows.grad))
    if n <= size:
        return [rows] if n else []
    return [_slice(rows, first, first + size) for first in range(0, n, size)]


def _width(values: np.ndarray | None) -> int:
    return 0 if values is None else int(values.shape[1])


def _slice(rows: HistoryRows, lo: int, hi: int) -> HistoryRows:
    return HistoryRows(steps=rows.steps[lo:hi], f=rows.f[lo:hi], grad_norm=rows.grad_norm[lo:hi], lr=rows.lr[lo:hi],
                       x=None if rows.x is None else rows.x[lo:hi], grad=None if rows.grad is None else rows.grad[lo:hi])


def concat(blocks: Sequence[HistoryRows]) -> HistoryRows:
    """One block of the rows of ``blocks`` (consecutive, of one job), in order."""
    if len(blocks) == 1:
        return blocks[0]

    def column(name: str) -> Any:
        values = [getattr(b, name) for b in blocks]
        width = next((v.shape[1] for v in values if v is not None), None)
        if width is None:
            return None  # a row stored without it beside rows with it reads as NaNs: one shape a block
        return np.concatenate([v if v is not None else np.full((len(b), width), np.nan) for v, b in zip(values, blocks)])

    return HistoryRows(steps=np.concatenate([b.steps for b in blocks]), f=np.concatenate([b.f for b in blocks]),
                       grad_norm=np.concatenate([b.grad_norm for b in blocks]),
                       lr=np.concatenate([b.lr for b in blocks]), x=column("x"), grad=column("grad"))


def select_rows(rows: HistoryRows, keep: np.ndarray) -> HistoryRows:
    """The rows of ``rows`` where the boolean (or index) array ``keep`` says."""
    return HistoryRows(steps=rows.steps[keep], f=rows.f[keep], grad_norm=rows.grad_norm[keep], lr=rows.lr[keep],
                       x=None if rows.x is None else rows.x[keep], grad=None if rows.grad is None else rows.grad[keep])


# -- Writing ---------------------------------------------------------------------------------------

def write_rows(session: Any, job_id: str, rows: HistoryRows, replace: bool = False) -> int:
    """Store the rows inside the caller's transaction; with ``replace``, first delete the job's
    rows from their first step on. Returns how many rows the history gained."""
    return write_many(session, [(job_id, rows)], replace)


def write_many(session: Any, items: Sequence[tuple[str, HistoryRows]], replace: bool = False) -> int:
    """``write_rows`` for the rows of many jobs (one COPY on PostgreSQL); returns how many rows
    the histories gained (fewer than written for a ``replace`` that found rows already stored)."""
    items = [(job_id, rows) for job_id, rows in items if len(rows)]
    if not items:
        return 0
    first_of: dict[str, int] = {}
    for job_id, rows in items:
        first_of[job_id] = min(first_of.get(job_id, int(rows.steps[0])), int(rows.steps[0]))
    removed = 0
    if replace:
        removed = cut(session, first_of)
    else:
        _refuse_overlaps(session, first_of)
    _insert(session, items)
    return max(0, sum(len(rows) for _, rows in items) - removed)


def _insert(session: Any, items: Sequence[tuple[str, HistoryRows]]) -> None:
    """Store the rows as chunks (one COPY on PostgreSQL), checking nothing."""
    chunks = [(job_id, chunk) for job_id, rows in items for chunk in split(rows)]
    if session.bind.dialect.name == "postgresql":
        statement = f"COPY history_chunks ({COLUMNS}) FROM STDIN WITH (FORMAT binary)"
        raw = session.connection().connection.driver_connection
        try:
            with raw.cursor() as cur:
                with cur.copy(statement) as copy:
                    copy.write(pgcopy.encode_chunks(chunks))
        except psycopg.IntegrityError as exc:  # the driver's own errors: map them as SQLAlchemy would
            raise IntegrityError(statement, None, exc) from exc
        except psycopg.OperationalError as exc:
            raise OperationalError(statement, None, exc) from exc
    else:
        session.connection().exec_driver_sql(
            f"INSERT INTO history_chunks ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_sqlite_values(job_id, chunk) for job_id, chunk in chunks])


def _refuse_overlaps(session: Any, first_of: Mapping[str, int]) -> None:
    """Raise IntegrityError (as the old one-row-per-step key did) when a job already stores a step
    at or after ``first_of[job]``, the first it is given: no step is ever stored twice, whatever
    chunks hold it. One range read of the (job_id, last_step) index; ``write_once`` then replaces
    from that step."""
    table = HistoryChunk.__table__
    stored = session.execute(
        select(table.c.job_id, func.max(table.c.last_step))
        .where(one_of(table.c.job_id, list(first_of), session.bind.dialect.name),
               table.c.last_step >= min(first_of.values()))
        .group_by(table.c.job_id)).all()
    clashes = sorted(job_id for job_id, last in stored if last >= first_of[job_id])
    if clashes:
        raise IntegrityError("history_chunks: steps already stored", None,
                             ValueError(f"jobs {clashes[:3]} already store steps at or after the first written"))


def write_once(db: Database, transaction: Callable[[Any, bool], T]) -> T:
    """Run ``transaction(session, replace)`` in a session: first with replace False, and again
    with replace True if its rows met ones already stored by an earlier, ambiguous commit."""
    try:
        with db.session() as s:
            return transaction(s, False)
    except IntegrityError:
        with db.session() as s:
            return transaction(s, True)


def _sqlite_values(job_id: str, rows: HistoryRows) -> tuple[Any, ...]:
    width = max(_width(rows.x), _width(rows.grad))
    return (job_id, int(rows.steps[0]), int(rows.steps[-1]), len(rows), width, json.dumps(rows.steps.tolist()),
            json_floats(rows.f), json_floats(rows.grad_norm), json_floats(rows.lr),
            None if rows.x is None else json_floats(rows.x), None if rows.grad is None else json_floats(rows.grad))


def json_floats(values: np.ndarray) -> str:
    """SQLite's text of a float array (nested as its shape): each value its shortest exact text,
    NaN the string "NaN", infinities ``1e999``/``-1e999`` (valid JSON that SQLite reads as them)."""
    text = json.dumps(values.tolist(), separators=(",", ":"))
    if "N" in text or "I" in text:
        text = text.replace("NaN", '"NaN"').replace("Infinity", "1e999")
    return text


def cut(s: Any, first_of: Mapping[str, int]) -> int:
    """Delete each job's rows from step ``first_of[job]`` on (a chunk that straddles it keeps its
    rows before it); returns how many rows went."""
    table, dialect = HistoryChunk.__table__, s.bind.dialect.name
    removed = 0
    by_first: dict[int, list[str]] = {}
    for job_id, first in first_of.items():
        by_first.setdefault(first, []).append(job_id)
    for first, job_ids in by_first.items():  # a batch's jobs mostly replace from one step
        mine = one_of(table.c.job_id, job_ids, dialect)
        before = s.execute(select(table.c.job_id, func.max(table.c.first_step))
                           .where(mine, table.c.first_step < first).group_by(table.c.job_id)).all()
        straddling = []
        for job_id, start in before:  # the last chunk before ``first``: does it reach past it?
            straddling += read_chunks(s, and_(table.c.job_id == job_id, table.c.first_step == start,
                                              table.c.last_step >= first))
        result = s.execute(delete(table).where(mine, table.c.first_step >= first).returning(table.c.n_rows))
        removed += sum(int(n) for n in result.scalars())
        for job_id, rows in straddling:
            s.execute(delete(table).where(table.c.job_id == job_id, table.c.first_step == int(rows.steps[0])))
            keep = rows.steps < first
            removed += int(len(rows) - keep.sum())
            if keep.any():  # the rows before ``first``: nothing is stored from there on now
                _insert(s, [(job_id, select_rows(rows, keep))])
    return removed


# -- Reading ---------------------------------------------------------------------------------------

def read_chunks(s: Any, where: Any, with_x: bool = True, with_grad: bool = True,
                limit: int | None = None) -> list[tuple[str, HistoryRows]]:
    """The chunks ``where`` chooses (an SQLAlchemy condition on ``history_chunks``), in job and
    step order, at most ``limit``, as (job id, rows); x and grad only when asked for."""
    c = HistoryChunk.__table__.c
    postgres = s.bind.dialect.name == "postgresql"
    arrays = [c.steps, c.f, c.grad_norm, c.lr, c.x if with_x else None, c.grad if with_grad else None]
    picked = [literal_column("NULL") if a is None else func.array_send(a, type_=LargeBinary()) if postgres else a
              for a in arrays]
    query = select(c.job_id, *picked, c.width).where(where).order_by(c.job_id, c.first_step)
    if limit is not None:
        query = query.limit(limit)
    decode = decode_pg if postgres else decode_sqlite
    return [(r[0], decode(r[1:])) for r in s.execute(query).all()]


_INT_ITEMS = np.dtype([("len", ">i4"), ("v", ">i4")])
_FLOAT_ITEMS = np.dtype([("len", ">i4"), ("v", ">f8")])


def _pg_array(data: Any, items: np.dtype) -> np.ndarray:
    """A one-dimensional array in PostgreSQL's binary form (``array_send``) as numpy values."""
    buffer = bytes(data) if not isinstance(data, bytes) else data
    ndim = int.from_bytes(buffer[0:4], "big")
    if ndim == 0:
        return np.zeros(0, dtype=items["v"].newbyteorder("="))
    return np.frombuffer(buffer, dtype=items, offset=12 + 8 * ndim)["v"].astype(items["v"].newbyteorder("="))


def pg_ints(data: Any) -> np.ndarray:
    """An ``integer[]`` in PostgreSQL's binary form as int64 values."""
    return _pg_array(data, _INT_ITEMS).astype(np.int64)


def decode_pg(values: Sequence[Any]) -> HistoryRows:
    """A chunk read on PostgreSQL: steps, f, grad_norm, lr, x, grad (``array_send`` bytes, or
    None) and width."""
    return _decoded(pg_ints(values[0]), [None if v is None else _pg_array(v, _FLOAT_ITEMS) for v in values[1:6]],
                    int(values[6]))


def parse_floats(text: str) -> np.ndarray:
    """The values of ``json_floats``'s text, flat, exactly."""
    body = text.replace("[", "").replace("]", "")
    if not body:
        return np.zeros(0)
    if '"' in body:
        body = body.replace('"', "")
    return np.array(body.split(","), dtype=np.float64)


def decode_sqlite(values: Sequence[Any]) -> HistoryRows:
    """A chunk read on SQLite: steps, f, grad_norm, lr, x, grad (JSON text, or None) and width."""
    return _decoded(np.array(json.loads(values[0]), dtype=np.int64),
                    [None if v is None else parse_floats(v) for v in values[1:6]], int(values[6]))


def _decoded(steps: np.ndarray, floats: list[np.ndarray | None], width: int) -> HistoryRows:
    """A chunk's rows from its steps, its flat f, grad_norm, lr, x and grad, and x's width."""
    n = len(steps)
    return HistoryRows(steps=steps, f=floats[0], grad_norm=floats[1], lr=floats[2],
                       x=None if floats[3] is None else floats[3].reshape(n, width),
                       grad=None if floats[4] is None else floats[4].reshape(n, width))


def rows_of(s: Any, job_ids: Iterable[str]) -> dict[str, int]:
    """Rows stored for each of ``job_ids`` that has any (a sum over its chunks)."""
    table, dialect = HistoryChunk.__table__, s.bind.dialect.name
    found = s.execute(select(table.c.job_id, func.sum(table.c.n_rows))
                      .where(one_of(table.c.job_id, list(job_ids), dialect)).group_by(table.c.job_id)).all()
    return {job_id: int(n) for job_id, n in found}


def stored_rows(job_id: Any, correlate: Any) -> Any:
    """A scalar subquery: rows stored for the job ``job_id`` (a column of ``correlate``, the
    statement's table), summed over its chunks by the primary key."""
    table = HistoryChunk.__table__
    return (select(func.coalesce(func.sum(table.c.n_rows), 0)).where(table.c.job_id == job_id)
            .correlate(correlate).scalar_subquery())
