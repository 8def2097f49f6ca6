"""``/v1/jobs``: submit, read, list and cancel (histories are in ``service.api.history``).

Handlers stay short: validate -> call the store -> respond. A job row is written only after the
whole spec has passed its checks, so a refused request never leaves a job behind.
"""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, request

from service.api.auth import caller
from service.api.body import is_upload, read_upload
from service.api.components import SPEC_EXAMPLES, UPLOAD
from service.api.errors import bad_parameter
from service.api.openapi_parts import json_response, ref
from service.api.operations import Field, Int, Operation, Query, Says, Seconds, one_of, text
from service.api.params import ISO_TIME, STORABLE_TEXT, parse_time
from service.api.serialize import job_json
from service.api.services import services
from service.api.waiting import RETRY_AFTER_SECONDS
from service.errors import DescentError, ErrorCode
from service.status import ENDINGS
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


def idempotency_header(made: str, sent: str) -> dict[str, Any]:
    """The Idempotency-Key header of a submission that makes a ``made`` from a ``sent``, as the document states it."""
    return {"name": "Idempotency-Key", "in": "header", "required": False,
            "description": f"A retry with the same key and {sent} returns the first {made} (409 for another {sent})",
            "schema": {"type": "string", "minLength": IDEMPOTENCY_KEY_LENGTH[0], "maxLength": IDEMPOTENCY_KEY_LENGTH[1],
                       "not": {"pattern": "^" + job_store.SCOPED_KEY_PREFIX}}}


REPLAYED = {"description": "true when the Idempotency-Key was seen before", "required": False,
            "schema": {"type": "string", "enum": ["true"]}}


def request_body(schema: str, examples: dict[str, Any], upload: dict[str, Any]) -> Any:
    """A submission's body: JSON (``schema``) or multipart/form-data, at most max_body_bytes."""
    return lambda limits: {"required": True, "description": f"At most {limits.max_body_bytes} bytes (max_body_bytes)",
                           "content": {"application/json": {"schema": ref(schema), "examples": examples},
                                       "multipart/form-data": upload}}


SUBMIT = Operation("post", "/v1/jobs", "submitJob", "Submit a job", {"202": {
    **json_response(ref("JobView"), "Accepted and queued (or, with a known Idempotency-Key, the job it made)"),
    "headers": {"Location": {"description": "The job's URL", "required": True, "schema": {"type": "string"}},
                "Idempotent-Replayed": REPLAYED},
    "links": {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}}
              for name, op in (("GetJob", "getJob"), ("GetHistory", "getHistory"), ("CancelJob", "cancelJob"))}}},
    (400, 401, 403, 409, 413, 415, 429, 503), headers=(idempotency_header("job", "spec"),),
    body=request_body("JobSpec", SPEC_EXAMPLES, UPLOAD))


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


INCLUDES = ("data", "x0", "x", "grad")
INCLUDE_PATTERN = r"^(?:" + "|".join(INCLUDES) + r")(?:,(?:" + "|".join(INCLUDES) + r"))*$"
JOB = json_response(ref("JobView"), "The job")


class GetQuery(Query):
    wait: Seconds = Field(None, ge=WAIT_SECONDS[0], le=WAIT_SECONDS[1], description=(
        "Seconds to wait for the job to finish before answering; past DESCENT_MAX_WAITERS waiting requests it "
        "answers at once, with Retry-After"))
    include: Annotated[str, Says("'{name}' must be a comma-separated list of: " + ", ".join(INCLUDES))] = Field(
        None, pattern=INCLUDE_PATTERN, description=(
            "Comma-separated: data, the spec's data tensors with their values (by default each is {sha256, shape}, "
            "a reference to the stored tensor); x0: the same for an x0 of more than 10,000 numbers; x, grad: the "
            "result's, inline however big (by default one of more than DESCENT_INLINE_ELEMENTS elements is a "
            "TensorSummary)"))


GET = Operation("get", "/v1/jobs/{job_id}", "getJob", "One job", {"200": JOB}, (400, 401, 403, 404, 503),
                GetQuery)


@bp.get("/<job_id>")
def get(job_id: str):  # type: ignore[no-untyped-def]
    """The job; with ``?wait=S`` (up to 30 s) the answer waits until the job has finished, unless
    this process already serves DESCENT_MAX_WAITERS waiting requests: then it answers at once,
    with ``Retry-After``."""
    svc = services()
    query = GET.args()
    seconds = query.wait
    include = frozenset(query.include.split(",")) if query.include else frozenset()
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


_TIME = Annotated[str, Says("'{name}' must be an ISO-8601 date or time from 1970 to 2999, such as 2026-11-28T04:30:00Z")]


class ListQuery(Query):
    status: Annotated[one_of([s.value for s in JobStatus]), Says("'{name}' must be one of " + ", ".join(JobStatus))] = \
        Field(None, description="Only jobs in this status")
    tag: Annotated[text(), Says("'{name}' must be key:value")] = Field(
        None, pattern="^[^:]*:", description="key:value: only jobs with this tag")
    name: text(NAME_CHARS) = Field(None, pattern=STORABLE_TEXT, description="Only jobs with this name")
    stop_reason: Annotated[one_of(ENDINGS), Says("'{name}' must be one of " + ", ".join(ENDINGS))] = Field(
        None, description="Only finished jobs that ended for this reason (a diverged run is succeeded, with "
                          "stop_reason diverged)")
    created_after: _TIME = Field(None, pattern=ISO_TIME,
                                 description="Only jobs created at or after this time (UTC when no offset)")
    created_before: _TIME = Field(None, pattern=ISO_TIME,
                                  description="Only jobs created before this time (UTC when no offset)")
    order: Annotated[one_of(ORDERS), Says("'{name}' must be asc (oldest first) or desc (newest first)")] = Field(
        "asc", description="asc: oldest first (the default); desc: newest first")
    limit: Int = Field(50, ge=LIST_LIMIT[0], le=LIST_LIMIT[1], description="Jobs per page (default 50)")
    cursor: text() = Field(None, description="next_cursor from the previous page")


LIST = Operation("get", "/v1/jobs", "listJobs", "List jobs in creation order, a page at a time",
                 {"200": {**json_response(ref("JobPage"), "A page of jobs"), "links": {"NextPage": {
                     "operationId": "listJobs", "description": "The next page",
                     "parameters": {"cursor": "$response.body#/next_cursor"}}}}},
                 (400, 401, 403, 503), ListQuery)


@bp.get("")
def list_():  # type: ignore[no-untyped-def]
    query = LIST.args()
    tag_pair = tuple(query.tag.split(":", 1)) if query.tag else None
    where = job_store.JobFilter(status=query.status, tag=tag_pair, name=query.name, stop_reason=query.stop_reason,
                                created_after=parse_time(query.created_after),
                                created_before=parse_time(query.created_before))
    try:
        page, cursor = job_store.list_jobs(services().db, where, limit=query.limit, cursor=query.cursor,
                                           owner=caller().owner_filter, newest_first=query.order == "desc")
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("cursor", "'cursor' is not a cursor this service returned") from None
    return {"jobs": [job_json(j) for j in page], "next_cursor": cursor}


CANCEL = Operation("post", "/v1/jobs/{job_id}/cancel", "cancelJob", "Cancel a queued or running job",
                   {"202": {**JOB, "description": "Cancelled, or cancellation requested"}},
                   (400, 401, 403, 404, 409, 413, 415, 503))


@bp.post("/<job_id>/cancel")
def cancel(job_id: str):  # type: ignore[no-untyped-def]
    job = job_store.request_cancel(services().db, job_id, owner=caller().owner_filter)
    return job_json(job), 202
