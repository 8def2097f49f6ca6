"""``/v1/jobs/<id>/history``: a job's per-step history, streamed as JSON pages, CSV or NDJSON.

Memory per request is bounded whatever the job's size: the store reads pages of about
``PAGE_BYTES`` of values (one row at a time for a million elements), and the response leaves in
pieces of about ``FLUSH_CHARS`` characters (a wide row in several). Every parameter is checked,
and the first page read, before the response starts, so a refusal or an early database failure
is a proper error status rather than a 200 whose body breaks off.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Iterable, Iterator

from flask import Blueprint, Response, request

from service.api.auth import caller
from service.api.errors import bad_parameter
from service.api.params import int_arg
from service.api.serialize import HISTORY_FIELDS, csv_header, csv_line, json_row
from service.api.services import services
from service.store import HistoryBatch
from service.store import jobs as job_store
from service.store.history import iter_history

bp = Blueprint("history", __name__, url_prefix="/v1/jobs")
log = logging.getLogger(__name__)

# The history's step column is a 32-bit integer (PostgreSQL ``integer``): ``start`` and ``every``
# beyond it would fail in the database, after the response has begun.
MAX_STEP = 2**31 - 1
MAX_ROWS = 100_000
# The response leaves in pieces of about this many characters (or one row, if a row is larger).
FLUSH_CHARS = 1 << 20


@bp.get("/<job_id>/history")
def history(job_id: str):  # type: ignore[no-untyped-def]
    svc = services()
    job = job_store.get_job(svc.db, job_id, owner=caller().owner_filter)
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv", "ndjson"):
        raise bad_parameter("format", "'format' must be json, csv or ndjson")
    start = int_arg("start", 0, 0, MAX_STEP)
    # One bound for every format (the OpenAPI document states it once); without a limit, CSV and
    # NDJSON stream every row and JSON answers a page of 1,000.
    limit = int_arg("limit", 1000 if fmt == "json" else None, 1, MAX_ROWS)
    every = int_arg("every", 1, 1, MAX_STEP) or 1
    recorded = job.spec.get("record", {})
    fields = [f for f in HISTORY_FIELDS if (f != "x" or recorded.get("x", True)) and (f != "grad" or recorded.get("grad"))]
    if request.args.get("fields"):
        asked = [f.strip() for f in request.args["fields"].split(",") if f.strip()]
        unknown = [f for f in asked if f not in HISTORY_FIELDS]
        if unknown:
            raise bad_parameter("fields", f"unknown field '{unknown[0][:40]}'; fields: {', '.join(HISTORY_FIELDS)}")
        fields = ["step"] + [f for f in HISTORY_FIELDS if f in asked and f != "step"]
    shape, numel = list(job.shape), math.prod(job.shape)
    svc.waiters.take_for_stream()  # a stream holds a request thread until its last byte
    try:
        pages = iter_history(svc.db, job_id, start=start or 0, limit=None if limit is None else limit + 1,
                             every=every, with_x="x" in fields, with_grad="grad" in fields, numel=numel)
        first = next(pages, None)  # read here: a failure is an error status, not a broken 200
    except BaseException:
        svc.waiters.give_back()
        raise
    rows = _rows(_prefetched(first, pages))  # the stream needs no request context: all is bound here
    if fmt == "csv":
        response = Response(_csv(rows, fields, numel, limit), mimetype="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'})
    elif fmt == "ndjson":
        response = Response(_ndjson(rows, fields, shape, limit), mimetype="application/x-ndjson")
    else:
        response = Response(_json_page(rows, fields, shape, limit), mimetype="application/json")
    response.call_on_close(svc.waiters.give_back)  # when the server is done with it, however it ended
    return response


def _prefetched(first: HistoryBatch | None, pages: Iterator[HistoryBatch]) -> Iterator[HistoryBatch]:
    if first is None:
        return
    yield first
    del first
    try:
        yield from pages
    except Exception:
        log.exception("history read failed after the response began; the response is cut short")
        raise


def _rows(pages: Iterator[HistoryBatch]) -> Iterator[dict[str, Any]]:
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
