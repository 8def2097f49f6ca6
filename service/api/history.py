"""``/v1/jobs/<id>/history``: a job's per-step history, streamed as JSON pages, CSV or NDJSON."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterator

from flask import Blueprint, Response, request, stream_with_context

from service.api.errors import bad_parameter
from service.api.params import int_arg
from service.api.serialize import HISTORY_FIELDS, csv_header, csv_row, row_json
from service.api.services import services
from service.store import HistoryBatch
from service.store import jobs as job_store
from service.store.history import iter_history

bp = Blueprint("history", __name__, url_prefix="/v1/jobs")


@bp.get("/<job_id>/history")
def history(job_id: str):  # type: ignore[no-untyped-def]
    svc = services()
    job = job_store.get_job(svc.db, job_id)
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv", "ndjson"):
        raise bad_parameter("format", "'format' must be json, csv or ndjson")
    start = int_arg("start", 0, 0)
    limit = int_arg("limit", 1000 if fmt == "json" else None, 1, 100_000 if fmt == "json" else None)
    every = int_arg("every", 1, 1) or 1
    recorded = job.spec.get("record", {})
    fields = [f for f in HISTORY_FIELDS if (f != "x" or recorded.get("x", True)) and (f != "grad" or recorded.get("grad"))]
    if request.args.get("fields"):
        asked = [f.strip() for f in request.args["fields"].split(",") if f.strip()]
        unknown = [f for f in asked if f not in HISTORY_FIELDS]
        if unknown:
            raise bad_parameter("fields", f"unknown field '{unknown[0][:40]}'; fields: {', '.join(HISTORY_FIELDS)}")
        fields = ["step"] + [f for f in HISTORY_FIELDS if f in asked and f != "step"]
    rows = _rows(iter_history(svc.db, job_id, start=start or 0, limit=None if limit is None else limit + 1,
                              every=every, with_x="x" in fields, with_grad="grad" in fields))
    shape, numel = list(job.shape), math.prod(job.shape)
    if fmt == "csv":
        return Response(stream_with_context(_csv(rows, fields, numel, limit)), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'})
    if fmt == "ndjson":
        return Response(stream_with_context(_ndjson(rows, fields, shape, limit)), mimetype="application/x-ndjson")
    return Response(stream_with_context(_json_page(rows, fields, shape, limit)), mimetype="application/json")


def _rows(pages: Iterator[HistoryBatch]) -> Iterator[dict[str, Any]]:
    for batch in pages:
        yield from batch.rows()


def _limited(rows: Iterator[Any], limit: int | None) -> Iterator[tuple[Any, bool]]:
    """Yield (row, is_extra): the row after ``limit`` only tells that another page exists."""
    for i, row in enumerate(rows):
        yield row, limit is not None and i >= limit


def _json_page(rows: Iterator[Any], fields: list[str], shape: list[int], limit: int | None) -> Iterator[str]:
    yield '{"rows": ['
    next_start = None
    first = True
    for row, extra in _limited(rows, limit):
        if extra:
            next_start = row["step"]
            break
        yield ("" if first else ",") + json.dumps(row_json(row, fields, shape))
        first = False
    yield '], "next_start": ' + json.dumps(next_start) + "}"


def _ndjson(rows: Iterator[Any], fields: list[str], shape: list[int], limit: int | None) -> Iterator[str]:
    batch: list[str] = []
    for row, extra in _limited(rows, limit):
        if extra:
            break
        batch.append(json.dumps(row_json(row, fields, shape)))
        if len(batch) >= 500:
            yield "\n".join(batch) + "\n"
            batch = []
    if batch:
        yield "\n".join(batch) + "\n"


def _csv(rows: Iterator[Any], fields: list[str], numel: int, limit: int | None) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(fields, numel))
    for i, (row, extra) in enumerate(_limited(rows, limit)):
        if extra:
            break
        writer.writerow(csv_row(row, fields, numel))
        if i % 500 == 499:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
