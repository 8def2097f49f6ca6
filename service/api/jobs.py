"""``/v1/jobs``: submit, read, list and cancel (histories are in ``service.api.history``).

Handlers stay short: validate -> call the store -> respond. A job row is written only after the
whole spec has passed its checks, so a refused request never leaves a job behind.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from service.api.auth import caller
from service.api.body import is_upload, read_upload
from service.api.errors import bad_parameter
from service.api.params import int_arg, seconds_arg, text_arg, time_arg
from service.api.serialize import job_json
from service.api.services import services
from service.api.waiting import RETRY_AFTER_SECONDS
from service.errors import DescentError, ErrorCode
from service.reasons import StopReason
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
    key = idempotency_key()
    raw, parts = read_upload() if is_upload() else (request.get_data(cache=False), None)
    admitted = svc.admissions.admit(raw, parts, svc.settings.limits)
    who = caller()
    job, created = job_store.create_job(svc.db, admitted.spec, admitted.shape,
                                        route_queue(admitted.device, admitted.numel), key, owner=who.owner,
                                        reserved_values=admitted.recorded_values, batch_key=admitted.batch_key,
                                        quotas=None if who.admin else svc.settings.quotas,
                                        tensors=admitted.tensor_store())
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
    include = include_arg()
    job = job_store.get_job(svc.db, job_id, owner=caller().owner_filter)

    def answer(job: JobRecord) -> dict[str, Any]:
        parts = include & {"data", "x0"}
        return job_json(data_store.job_with_values(svc.db, job, parts) if parts else job, include)

    if not seconds or job.finished:
        return answer(job)
    if not svc.waiters.take():  # this process already serves its share of waiters: answer now
        return answer(job), 200, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    try:
        return answer(svc.finished.wait(job_id, seconds))
    finally:
        svc.waiters.give_back()


INCLUDES = ("data", "x0", "x", "grad")
INCLUDE_PATTERN = r"^(?:" + "|".join(INCLUDES) + r")(?:,(?:" + "|".join(INCLUDES) + r"))*$"


def include_arg() -> frozenset[str]:
    """``?include=data,x0,x,grad``: the spec's data tensors (and a big x0) with their values, not
    references to them; the result's x and grad inline however big, not summaries."""
    include = request.args.get("include") or ""
    names = frozenset(include.split(",")) if include else frozenset()
    if not names <= set(INCLUDES):
        raise bad_parameter("include", f"'include' must be a comma-separated list of: {', '.join(INCLUDES)}")
    return names


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
