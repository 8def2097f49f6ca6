"""``/v1/jobs``: submit, read, list and cancel (histories are in ``service.api.history``).

Handlers stay short: validate -> call the store -> respond. A job row is written only after the
whole spec has passed its checks, so a refused request never leaves a job behind.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, request

from service.api.auth import caller
from service.api.errors import bad_parameter
from service.api.params import int_arg, seconds_arg, text_arg, time_arg
from service.api.serialize import job_json
from service.api.services import services
from service.api.waiting import RETRY_AFTER_SECONDS
from service.errors import DescentError, ErrorCode
from service.reasons import StopReason
from service.spec import check_spec
from service.spec.batchkey import batch_key
from service.store import JobRecord, JobStatus
from service.store import data as data_store
from service.store import jobs as job_store
from service.api.fleet import gpu_worker_alive

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

# Bounds of the parameters below (the OpenAPI document states these same values).
LIST_LIMIT = (1, 1000)
WAIT_SECONDS = (0, 30)
IDEMPOTENCY_KEY_LENGTH = (1, 200)
ORDERS = ("asc", "desc")
NAME_CHARS = 200  # a job's name is at most this long
# The stop reasons a finished job can have (a hand-back is never an ending).
ENDED_BY = tuple(r.value for r in StopReason if r != StopReason.INTERRUPTED)


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, refusing a key given twice (json would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def read_json_body() -> Any:
    """The request body as JSON, or a 400 that says what is wrong with it."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise DescentError("the request body is empty; send the job spec as JSON", code=ErrorCode.INVALID_JSON)
    if b"\x00" in raw[:4] or raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # JSON text in UTF-8 never holds a NUL
        raise DescentError("the request body is not UTF-8 text (it looks like UTF-16 or UTF-32); send JSON in UTF-8",
                           code=ErrorCode.INVALID_JSON)
    try:
        # Decoded here: json.loads of bytes would also take UTF-16 and UTF-32 (RFC 8259: UTF-8 only).
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise DescentError(f"the request body names the key {exc.key[:80]!r} twice in one object",
                           code=ErrorCode.INVALID_JSON, field=exc.key[:80]) from None
    except UnicodeDecodeError:
        raise DescentError("the request body is not UTF-8 text", code=ErrorCode.INVALID_JSON) from None
    except json.JSONDecodeError as exc:
        raise DescentError(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code=ErrorCode.INVALID_JSON) from None
    except RecursionError:
        raise DescentError("the request body nests too deeply", code=ErrorCode.INVALID_JSON) from None
    except ValueError:  # an integer literal longer than Python converts (4,300 digits)
        raise DescentError("the request body holds a number with too many digits", code=ErrorCode.INVALID_JSON) from None


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, checked (a 400 naming it otherwise)."""
    key = request.headers.get("Idempotency-Key")
    low, high = IDEMPOTENCY_KEY_LENGTH
    if key is not None and not (low <= len(key) <= high) or (key or "").startswith(job_store.SCOPED_KEY_PREFIX):
        raise DescentError(f"Idempotency-Key must be {low} to {high} characters, not starting with "
                           f"'{job_store.SCOPED_KEY_PREFIX}'", code=ErrorCode.INVALID_HEADER, field="Idempotency-Key")
    return key


def route_queue(device: str, elements: int, batch: int = 1) -> str:
    """The queue of a job with x of ``elements`` that runs in batches of up to ``batch`` jobs.
    ``auto`` goes to a GPU only where it pays and while a GPU worker heartbeats: a GPU is slower
    than a CPU on tiny jobs (the lesson's 2x2), faster on big tensors and big batches, so at
    least DESCENT_AUTO_GPU_MIN_ELEMENTS elements or DESCENT_AUTO_GPU_MIN_BATCH jobs."""
    if device in ("cpu", "gpu"):
        return device
    settings = services().settings
    pays = elements >= settings.auto_gpu_min_elements or batch >= settings.auto_gpu_min_batch
    return "gpu" if pays and gpu_worker_alive() else "cpu"


@bp.post("")
def submit():  # type: ignore[no-untyped-def]
    svc = services()
    data = read_json_body()
    checked = check_spec(data, svc.settings.limits)
    key = idempotency_key()
    spec = checked.as_json()
    who = caller()
    job, created = job_store.create_job(svc.db, spec, list(checked.shape), route_queue(checked.spec.device, checked.numel), key,
                                        owner=who.owner, reserved_values=checked.recorded_values,
                                        batch_key=batch_key(checked),
                                        quotas=None if who.admin else svc.settings.quotas)
    if created:
        svc.dispatcher.send(job.id, job.queue)  # if the broker is down, the reconciler sends it later
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return job_json(job), 202, headers


@bp.get("/<job_id>")
def get(job_id: str):  # type: ignore[no-untyped-def]
    """The job; with ``?wait=S`` (up to 30 s) the answer waits until the job has finished, unless
    this process already serves DESCENT_MAX_WAITERS waiting requests: then it answers at once,
    with ``Retry-After``."""
    svc = services()
    seconds = seconds_arg("wait", *WAIT_SECONDS)
    with_data = include_arg() == "data"
    job = job_store.get_job(svc.db, job_id, owner=caller().owner_filter)

    def answer(job: JobRecord) -> dict[str, Any]:
        return job_json(data_store.job_with_values(svc.db, job) if with_data else job)

    if not seconds or job.finished:
        return answer(job)
    if not svc.waiters.take():  # this process already serves its share of waiters: answer now
        return answer(job), 200, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    try:
        return answer(svc.finished.wait(job_id, seconds))
    finally:
        svc.waiters.give_back()


INCLUDES = ("data",)


def include_arg() -> str | None:
    """``?include=data``: the spec's data tensors with their values, not references to them."""
    include = request.args.get("include") or None
    if include is not None and include not in INCLUDES:
        raise bad_parameter("include", f"'include' must be one of: {', '.join(INCLUDES)}")
    return include


@bp.get("")
def list_():  # type: ignore[no-untyped-def]
    status = request.args.get("status") or None
    if status is not None and status not in JobStatus.__members__.values():
        raise bad_parameter("status", f"'status' must be one of {', '.join(JobStatus)}")
    tag = text_arg("tag")
    tag_pair = None
    if tag:
        if ":" not in tag:
            raise bad_parameter("tag", "'tag' must be key:value")
        key, value = tag.split(":", 1)
        tag_pair = (key, value)
    stop_reason = request.args.get("stop_reason") or None
    if stop_reason is not None and stop_reason not in ENDED_BY:
        raise bad_parameter("stop_reason", f"'stop_reason' must be one of {', '.join(ENDED_BY)}")
    order = request.args.get("order") or "asc"
    if order not in ORDERS:
        raise bad_parameter("order", "'order' must be asc (oldest first) or desc (newest first)")
    where = job_store.JobFilter(status=status, tag=tag_pair, name=text_arg("name", NAME_CHARS),
                                stop_reason=stop_reason, created_after=time_arg("created_after"),
                                created_before=time_arg("created_before"))
    limit = int_arg("limit", 50, *LIST_LIMIT)
    try:
        page, cursor = job_store.list_jobs(services().db, where, limit=limit or 50, cursor=text_arg("cursor"),
                                           owner=caller().owner_filter, newest_first=order == "desc")
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("cursor", "'cursor' is not a cursor this service returned") from None
    return {"jobs": [job_json(j) for j in page], "next_cursor": cursor}


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):  # type: ignore[no-untyped-def]
    job = job_store.request_cancel(services().db, job_id, owner=caller().owner_filter)
    return job_json(job), 202
