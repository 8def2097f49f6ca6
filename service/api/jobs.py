"""``/v1/jobs``: submit, read, list, cancel, and stream histories.

Handlers stay short: validate -> call the store -> respond. A job row is written only after the
whole spec has passed its checks, so a refused request never leaves a job behind.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from typing import Any, Iterator

from flask import Blueprint, Response, request, stream_with_context

from service.api.errors import bad_parameter
from service.api.serialize import (
    HISTORY_FIELDS,
    csv_header,
    csv_row,
    job_json,
    row_json,
)
from service.api.services import services
from service.errors import DescentError, ErrorCode
from service.spec import check_spec
from service.store import HistoryBatch, JobStatus
from service.store import jobs as job_store
from service.store.fleet import live_gpu_worker
from service.store.history import iter_history

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


def read_json_body() -> Any:
    """The request body as JSON, or a 400 that says what is wrong with it."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise DescentError("the request body is empty; send the job spec as JSON", code=ErrorCode.INVALID_JSON)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise DescentError("the request body is not UTF-8 text", code=ErrorCode.INVALID_JSON) from None
    except json.JSONDecodeError as exc:
        raise DescentError(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code=ErrorCode.INVALID_JSON) from None
    except RecursionError:
        raise DescentError("the request body nests too deeply", code=ErrorCode.INVALID_JSON) from None


_gpu_seen: dict[str, float] = {"checked": -1e9, "alive": 0.0}


def route_queue(device: str) -> str:
    """``auto`` goes to the gpu queue while a GPU worker heartbeats (looked up at most once a
    second per API process)."""
    if device in ("cpu", "gpu"):
        return device
    svc = services()
    now = time.monotonic()
    if now - _gpu_seen["checked"] > 1.0:
        _gpu_seen["alive"] = float(live_gpu_worker(svc.db, alive_within=3 * svc.settings.heartbeat_seconds))
        _gpu_seen["checked"] = now
    return "gpu" if _gpu_seen["alive"] else "cpu"


@bp.post("")
def submit():  # type: ignore[no-untyped-def]
    svc = services()
    data = read_json_body()
    checked = check_spec(data, svc.settings.limits)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200):
        raise DescentError("Idempotency-Key must be 1 to 200 characters", code=ErrorCode.INVALID_HEADER,
                           field="Idempotency-Key")
    spec = checked.as_json()
    job, created = job_store.create_job(svc.db, spec, list(checked.shape), route_queue(checked.spec.device), key)
    if created:
        svc.dispatcher.send(job.id, job.queue)  # if the broker is down, the reconciler sends it later
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return job_json(job), 202, headers


@bp.get("/<job_id>")
def get(job_id: str):  # type: ignore[no-untyped-def]
    """The job; with ``?wait=S`` (up to 30 s) the answer waits until the job has finished."""
    svc = services()
    wait = request.args.get("wait")
    if not wait:
        return job_json(job_store.get_job(svc.db, job_id))
    try:
        seconds = float(wait)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 30:
        raise bad_parameter("wait", "'wait' must be a number of seconds from 0 to 30")
    return job_json(svc.finished.wait(job_id, seconds))


def _int_arg(name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter(name, f"'{name}' must be an integer, got {raw[:40]!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_parameter(name, f"'{name}' must be {bound}")
    return value


@bp.get("")
def list_():  # type: ignore[no-untyped-def]
    status = request.args.get("status") or None
    if status is not None and status not in JobStatus.__members__.values():
        raise bad_parameter("status", f"'status' must be one of {', '.join(JobStatus)}")
    tag = request.args.get("tag")
    tag_pair = None
    if tag:
        if ":" not in tag:
            raise bad_parameter("tag", "'tag' must be key:value")
        key, value = tag.split(":", 1)
        tag_pair = (key, value)
    limit = _int_arg("limit", 50, 1, 1000)
    try:
        page, cursor = job_store.list_jobs(services().db, status, tag_pair, limit or 50, request.args.get("cursor") or None)
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("cursor", "'cursor' is not a cursor this service returned") from None
    return {"jobs": [job_json(j) for j in page], "next_cursor": cursor}


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):  # type: ignore[no-untyped-def]
    job = job_store.request_cancel(services().db, job_id)
    return job_json(job), 202


@bp.get("/<job_id>/history")
def history(job_id: str):  # type: ignore[no-untyped-def]
    svc = services()
    job = job_store.get_job(svc.db, job_id)
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv", "ndjson"):
        raise bad_parameter("format", "'format' must be json, csv or ndjson")
    start = _int_arg("start", 0, 0)
    limit = _int_arg("limit", 1000 if fmt == "json" else None, 1, 100_000 if fmt == "json" else None)
    every = _int_arg("every", 1, 1) or 1
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
