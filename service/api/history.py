"""``/v1/jobs/<id>/history``: a job's per-step history, streamed as JSON pages, CSV or NDJSON.

Memory per request is bounded whatever the job's size: the store reads pages of about
``PAGE_BYTES`` of values (one row at a time for a million elements), and the response leaves in
pieces of about ``FLUSH_CHARS`` characters (a wide row in several). Every parameter is checked,
and the first page read, before the response starts, so a refusal or an early database failure
is a proper error status rather than a 200 whose body breaks off.

Three ways to the same bytes, by the width of a row: on PostgreSQL, a narrow CSV or NDJSON export
is formatted by the database itself (``store.history.iter_text``: blocks of text, one short
query each); other narrow reads are formatted a block of rows and a column at a time
(``serialize.csv_block``/``json_block``); a wide x (over ``BLOCK_MAX_WIDTH`` values) keeps the
row-by-row path, in pieces.

``points=N`` (1 to 100,000) answers at most N rows spread evenly over the steps from ``start``
to the last, always with the first and the last, chosen among the multiples of ``every``, at most
``limit`` of them; its JSON answer is one page (``next_start`` null). Its steps are worked out from
the job's ``record.every`` and looked up by primary key (``store.history.choose_steps``), so it
costs N index lookups whatever the history's length or width; on PostgreSQL the rows come back
as the database's text of their values (``store.history.iter_point_texts``), written as they are.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Annotated, Any, Iterable, Iterator

from flask import Blueprint, Response

from service.api.auth import caller
from service.api.openapi_parts import ref
from service.api.operations import EMPTY_IS_A_VALUE, Field, Int, Operation, Query, Says, one_of
from service.api.serialize import HISTORY_FIELDS, csv_block, csv_header, csv_line, json_block, json_row
from service.api.services import services
from service.store import HistoryRows
from service.store import jobs as job_store
from service.store.history import choose_steps, iter_history, iter_point_texts, iter_text, text_width_ok

bp = Blueprint("history", __name__, url_prefix="/v1/jobs")
log = logging.getLogger(__name__)

# The history's step column is a 32-bit integer (PostgreSQL ``integer``): ``start`` and ``every``
# beyond it would fail in the database, after the response has begun.
MAX_STEP = 2**31 - 1
FORMATS = ("json", "csv", "ndjson")
MAX_ROWS = 100_000
# The response leaves in pieces of about this many characters (or one row, if a row is larger).
FLUSH_CHARS = 1 << 20
MAX_POINTS = 100_000
# Blocks of a CSV or NDJSON export that PostgreSQL formats while one is sent (each on a
# connection of the pool, for one short query at a time).
READ_AHEAD = 2
# Rows with at most this many x/grad values are formatted a block at a time; wider ones a row
# (in pieces) at a time.
BLOCK_MAX_WIDTH = 4096
# A block of rows formatted at once holds about this many values (and its text about 20 times
# as many characters), at most BLOCK_ROWS rows.
BLOCK_VALUES = 200_000
BLOCK_ROWS = 20_000


_FIELD = "(?:" + "|".join(HISTORY_FIELDS) + ")"


class HistoryQuery(Query):
    start: Int = Field(0, ge=0, le=MAX_STEP, description="First step (default 0)")
    # One bound for every format; without a limit, CSV and NDJSON stream every row and JSON
    # answers a page of 1,000.
    limit: Int = Field(None, ge=1, le=MAX_ROWS, description=(
        f"Rows in a JSON page (default 1000, at most {MAX_ROWS}); CSV and NDJSON stream every row unless it is set"))
    every: Int = Field(1, ge=1, le=MAX_STEP, description="Every k-th recorded row (default 1)")
    points: Int = Field(None, ge=1, le=MAX_POINTS, description=(
        "At most this many rows, spread evenly over the steps from start to the last recorded step, always with "
        "the first and the last (points=1: the last only); chosen among the multiples of every, at most limit of "
        "them; a JSON answer is one page (next_start null)"))
    fields: Annotated[str, Says("'{name}' must be a comma-separated list of: " + ", ".join(HISTORY_FIELDS))] = Field(
        None, pattern=rf"^\s*(?:{_FIELD}?\s*(?:,\s*{_FIELD}?\s*)*)$",
        description="Comma-separated: " + ",".join(HISTORY_FIELDS) + " (step is always included)")
    format: Annotated[one_of(FORMATS), Says("'{name}' must be json, csv or ndjson"), EMPTY_IS_A_VALUE] = Field(
        "json", description="json pages {rows, next_start}, CSV, or NDJSON")


HISTORY = Operation("get", "/v1/jobs/{job_id}/history", "getHistory", "The per-step history, streamed", {
    "200": {"description": "JSON {rows, next_start}, CSV (step,f,grad_norm,lr,x_0,...) or NDJSON",
            "content": {"application/json": {"schema": ref("HistoryPage")}, "text/csv": {"schema": {"type": "string"}},
                        "application/x-ndjson": {"schema": {"type": "string"}}}}},
    (400, 401, 403, 404, 503), HistoryQuery)


@bp.get("/<job_id>/history")
def history(job_id: str):  # type: ignore[no-untyped-def]
    svc = services()
    query = HISTORY.args()
    job = job_store.get_job(svc.db, job_id, owner=caller().owner_filter)
    fmt, start, every, points = query.format, query.start, query.every, query.points
    limit = query.limit if query.limit is not None else 1000 if fmt == "json" else None
    recorded = job.spec.get("record", {})
    fields = [f for f in HISTORY_FIELDS if (f != "x" or recorded.get("x", True)) and (f != "grad" or recorded.get("grad"))]
    if query.fields:
        asked = {f.strip() for f in query.fields.split(",")}
        fields = ["step"] + [f for f in HISTORY_FIELDS if f in asked and f != "step"]
    if points is not None:  # the steps are chosen first: among multiples of every, at most limit of them
        points = min(points, query.limit) if query.limit else points
        limit = None
    shape, numel = list(job.shape), math.prod(job.shape)
    width = numel * (int("x" in fields) + int("grad" in fields))
    record_every = recorded.get("every", 1)
    stride = record_every if isinstance(record_every, int) and record_every > 1 else 1  # steps between rows
    block = numel > 0 and width <= BLOCK_MAX_WIDTH
    rows_per_page = max(1, min(BLOCK_ROWS, BLOCK_VALUES // (4 + width))) if block else 1000
    svc.waiters.take_for_stream()  # a stream holds a request thread until its last byte
    try:
        if points is not None and block and svc.db.dialect == "postgresql":
            texts = _point_texts(iter_point_texts(svc.db, job_id, points, fields, numel, start=start or 0, every=every,
                                                  stride=stride, sep=_SEPARATOR[fmt], rows_per_page=rows_per_page),
                                 fmt, fields, shape)
            first_text = next(texts, None)  # read here: a failure is an error status, not a broken 200
            pages = None
        elif points is None and fmt != "json" and numel > 0 and text_width_ok(svc.db, width):
            texts = iter_text(svc.db, job_id, fmt, fields, shape, start=start or 0, limit=limit, every=every,
                              stride=stride, ahead=READ_AHEAD)
            first_text = next(texts, None)  # read here: a failure is an error status, not a broken 200
            pages = None
        else:
            steps = None if points is None else choose_steps(svc.db, job_id, points, start=start or 0, every=every,
                                                                stride=stride)
            pages = iter_history(svc.db, job_id, start=start or 0, limit=None if limit is None else limit + 1,
                                 every=every, with_x="x" in fields, with_grad="grad" in fields, numel=numel,
                                 rows_per_page=rows_per_page, steps=steps)
            first = next(pages, None)  # read here: a failure is an error status, not a broken 200
    except BaseException:
        svc.waiters.give_back()
        raise
    if pages is None:
        body: Iterator[str] = _texts(first_text, texts)
        if fmt == "csv":
            body = _chain(["".join(csv_header(fields, numel))], body)
        response = _response(body, fmt, job_id)
    elif block:
        response = _response(_blocks(_prefetched(first, pages), fmt, fields, shape, limit), fmt, job_id)
    else:
        rows = _rows(_prefetched(first, pages))  # the stream needs no request context: all is bound here
        if fmt == "csv":
            body = _csv(rows, fields, numel, limit)
        elif fmt == "ndjson":
            body = _ndjson(rows, fields, shape, limit)
        else:
            body = _json_page(rows, fields, shape, limit)
        response = _response(body, fmt, job_id)
    response.call_on_close(svc.waiters.give_back)  # when the server is done with it, however it ended
    return response


def _response(body: Iterable[str], fmt: str, job_id: str) -> Response:
    if fmt == "csv":
        return Response(body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'})
    return Response(body, mimetype="application/x-ndjson" if fmt == "ndjson" else "application/json")


def _chain(*parts: Iterable[str]) -> Iterator[str]:
    for part in parts:
        yield from part


def _texts(first: str | None, texts: Iterator[str]) -> Iterator[str]:
    try:
        if first is None:
            return
        yield first
        del first
        yield from texts
    except Exception:
        log.exception("history read failed after the response began; the response is cut short")
        raise
    finally:
        texts.close()  # type: ignore[attr-defined]  # its read-ahead stops


def _blocks(pages: Iterator[HistoryRows], fmt: str, fields: list[str], shape: list[int],
            limit: int | None) -> Iterator[str]:
    """The text of each page, formatted a block at a time; the row past ``limit`` (read only to
    know whether another page exists) is JSON's ``next_start`` and is never written."""
    numel = math.prod(shape)
    if fmt == "csv":
        yield "".join(csv_header(fields, numel))
    elif fmt == "json":
        yield '{"rows": ['
    written = 0
    next_start = None
    for batch in pages:
        if limit is not None and written + len(batch) > limit:
            keep = limit - written
            if keep < len(batch):
                next_start = int(batch.steps[keep])
            batch = _head(batch, keep)
        if fmt == "csv":
            text = csv_block(batch, fields, numel)
        elif fmt == "ndjson":
            text = json_block(batch, fields, shape, end="\n")
        else:
            text = ("," if written and len(batch) else "") + json_block(batch, fields, shape, end="", sep=",")
        written += len(batch)
        del batch
        if text:
            yield text
        del text
        if limit is not None and written >= limit:
            if next_start is None and fmt == "json":  # the page ended on a block's edge: is there more?
                more = next(pages, None)
                if more is not None and len(more):
                    next_start = int(more.steps[0])
            break
    if fmt == "json":
        yield '], "next_start": ' + json.dumps(next_start) + "}"


# Between the values of an x or grad, in each format.
_SEPARATOR = {"csv": ",", "json": ", ", "ndjson": ", "}
# PostgreSQL's text of the values that are not finite, as each format writes them.
_NON_FINITE = {True: {"NaN": '"NaN"', "Infinity": '"Infinity"', "-Infinity": '"-Infinity"'},
               False: {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}}


def _point_texts(pages: Iterator[list[tuple[Any, ...]]], fmt: str, fields: list[str],
                 shape: list[int]) -> Iterator[str]:
    """The answer to ``points`` from PostgreSQL's text of the rows (``store.history.iter_point_texts``),
    the same bytes as ``_blocks`` writes; the first page is read by the first ``next``. The CSV
    header is not written here."""
    first = next(pages, None)
    if fmt == "json":
        yield '{"rows": ['
    written = False
    for page in _chain([] if first is None else [first], pages):
        text = _point_page(page, fmt, fields, shape)
        yield ("," if written and fmt == "json" else "") + text
        written = True
        del page, text
    if fmt == "json":
        yield '], "next_start": null}'


def _point_page(rows: list[tuple[Any, ...]], fmt: str, fields: list[str], shape: list[int]) -> str:
    """One page's rows as ``serialize.csv_block``/``json_block`` write them (an x or grad that no
    row has is left out of JSON and empty in CSV; one that only some rows have is NaN elsewhere):
    a column at a time, each row one ``%`` of a template."""
    json_strings = fmt != "csv"
    numel = math.prod(shape)
    dims = list(shape) if len(shape) > 1 else [numel]
    columns = list(zip(*rows))
    cells: list[Any] = [columns[0]]
    parts = ['"step": %s']
    for name, column in zip([name for name in fields if name != "step"], columns[1:]):
        if name not in ("x", "grad"):
            cells.append(_scalar_texts(column, json_strings))
        elif all(text is None for text in column):
            if json_strings or not numel:
                continue
            cells.append(["," * (numel - 1)] * len(rows))  # the empty cells of a value that no row has
        else:
            cells.append(_array_texts(column, json_strings, dims))
        parts.append(json.dumps(name) + ": " + ("[%s]" if name in ("x", "grad") and len(dims) == 1 else "%s"))
    if json_strings:
        template = "{" + ", ".join(parts) + "}"
    else:
        template = ",".join(["%s"] * len(cells))
    end = {"csv": "\n", "ndjson": "\n", "json": ","}[fmt]
    return end.join(map(template.__mod__, zip(*cells))) + ("" if fmt == "json" else end)


def _scalar_texts(column: tuple[str, ...], json_strings: bool) -> Any:
    """The column's values as ``repr`` writes them: the column itself when every value has a
    point and none a positive exponent (one look at the whole column), else each rewritten."""
    joined = "|".join(column)
    if joined.count(".") == len(column) and "e+" not in joined:
        return column
    return [_repr_text(text, json_strings) for text in column]


def _array_texts(column: tuple[str | None, ...], json_strings: bool, dims: list[int]) -> Any:
    """Each row's x or grad: its values joined by the format's ``_SEPARATOR`` (JSON of more than
    one dimension: the whole nested array of ``dims``). The column itself when every value of
    every row has a point and none a positive exponent (one look at the whole column), else row
    by row, ``nans`` for a row without it."""
    sep = _SEPARATOR["json" if json_strings else "csv"]
    flat = not json_strings or len(dims) == 1
    if flat and None not in column:
        joined = "|".join(column)  # type: ignore[arg-type]
        if joined.count(".") == joined.count(",") + len(column) and "e+" not in joined:
            return column
    nans = [_NON_FINITE[json_strings]["NaN"]] * math.prod(dims)
    nested = None if flat else _nested(dims)
    out = []
    for text in column:
        values = nans if text is None else text.split(sep)
        if text is not None and (text.count(".") != len(values) or "e+" in text):
            values = [_repr_text(v, json_strings) for v in values]
        out.append(sep.join(values) if nested is None else nested % tuple(values))
    return out


def _nested(dims: list[int]) -> str:
    """A ``%`` template of an array of ``dims``, as ``json.dumps`` writes it."""
    item = "%s" if len(dims) == 1 else _nested(dims[1:])
    return "[" + ", ".join([item] * dims[0]) + "]"


def _repr_text(text: str, json_strings: bool) -> str:
    """Python's ``repr`` of the double that PostgreSQL wrote as ``text`` (its shortest exact text,
    ``extra_float_digits`` 1); for JSON a non-finite one as ``json_safe`` writes it. A text with a
    point or a negative exponent and no positive one is already ``repr``'s; an integral one
    gains '.0'; the rest (exponents from 15 on, where the two differ, NaN and infinities) are
    read back and written again."""
    if "e+" not in text and ("." in text or "e-" in text):
        return text
    if text.lstrip("-").isdigit():
        return text + ".0"
    value = float(text)
    return repr(value) if math.isfinite(value) else _NON_FINITE[json_strings][text]


def _head(batch: HistoryRows, n: int) -> HistoryRows:
    return HistoryRows(steps=batch.steps[:n], f=batch.f[:n], grad_norm=batch.grad_norm[:n], lr=batch.lr[:n],
                        x=None if batch.x is None else batch.x[:n], grad=None if batch.grad is None else batch.grad[:n])


def _prefetched(first: HistoryRows | None, pages: Iterator[HistoryRows]) -> Iterator[HistoryRows]:
    if first is None:
        return
    yield first
    del first
    try:
        yield from pages
    except Exception:
        log.exception("history read failed after the response began; the response is cut short")
        raise


def _rows(pages: Iterator[HistoryRows]) -> Iterator[dict[str, Any]]:
    """Row dicts of each page, x and grad as float64 row views (formatted one row at a time)."""
    for batch in pages:
        steps, f, gn, lr = batch.steps.tolist(), batch.f.tolist(), batch.grad_norm.tolist(), batch.lr.tolist()
        x, grad = batch.x, batch.grad
        del batch  # while the next page is read, only this one's arrays stay (until its rows are out)
        for i in range(len(steps)):
            row: dict[str, Any] = {"step": steps[i], "f": f[i], "grad_norm": gn[i], "lr": lr[i]}
            if x is not None:
                row["x"] = x[i]
            if grad is not None:
                row["grad"] = grad[i]
            yield row
        del x, grad


def _limited(rows: Iterator[Any], limit: int | None) -> Iterator[tuple[Any, bool]]:
    """Yield (row, is_extra): the row after ``limit`` only tells that another page exists."""
    for i, row in enumerate(rows):
        yield row, limit is not None and i >= limit


def _flushed(pieces: Iterable[str]) -> Iterator[str]:
    """Pieces of text joined into parts of about ``FLUSH_CHARS`` characters."""
    buf: list[str] = []
    size = 0
    for piece in pieces:
        buf.append(piece)
        size += len(piece)
        if size >= FLUSH_CHARS:
            yield "".join(buf)
            buf, size = [], 0
    if buf:
        yield "".join(buf)


def _json_page(rows: Iterator[Any], fields: list[str], shape: list[int], limit: int | None) -> Iterator[str]:
    def pieces() -> Iterator[str]:
        yield '{"rows": ['
        next_start = None
        first = True
        for row, extra in _limited(rows, limit):
            if extra:
                next_start = row["step"]
                break
            if not first:
                yield ","
            yield from json_row(row, fields, shape)
            first = False
        yield '], "next_start": ' + json.dumps(next_start) + "}"

    return _flushed(pieces())


def _ndjson(rows: Iterator[Any], fields: list[str], shape: list[int], limit: int | None) -> Iterator[str]:
    def pieces() -> Iterator[str]:
        for row, extra in _limited(rows, limit):
            if extra:
                break
            yield from json_row(row, fields, shape)
            yield "\n"

    return _flushed(pieces())


def _csv(rows: Iterator[Any], fields: list[str], numel: int, limit: int | None) -> Iterator[str]:
    def pieces() -> Iterator[str]:
        yield from csv_header(fields, numel)
        for row, extra in _limited(rows, limit):
            if extra:
                break
            yield from csv_line(row, fields, numel)

    return _flushed(pieces())
