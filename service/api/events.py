"""``/v1/jobs/<id>/events``: a job's changes as Server-Sent Events, until it ends.

``status`` (the job) when the stream opens and on each change of status; ``progress`` about once
a second while the job runs; a ``: heartbeat`` comment when nothing else was sent for a while;
``end`` (the job) when it has finished, and then the stream closes. A stream also closes after
``timeout`` seconds without ``end`` (the client reconnects). Like a waiting request, a stream
takes one of the process's DESCENT_MAX_WAITERS slots (``service.api.waiting``), never a thread
of ordinary requests; each second of it costs one read of the job, and an ending job wakes it
at once through the shared watcher (``service.store.events``).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator

from flask import Blueprint, Response, stream_with_context

from service.api.auth import caller
from service.api.operations import Field, Operation, Query, Seconds
from service.api.serialize import job_json, progress_json
from service.api.services import Services, services
from service.errors import DescentError
from service.jsonsafe import strict_dumps
from service.store import JobStatus
from service.store import jobs as job_store
from service.store.records import JobRecord

bp = Blueprint("events", __name__, url_prefix="/v1/jobs")
log = logging.getLogger(__name__)

STREAM_SECONDS = (1, 3600)  # the bounds of ?timeout (the OpenAPI document states them)
DEFAULT_STREAM_SECONDS = 300
PROGRESS_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0


def event(name: str, data: Any) -> str:
    """One Server-Sent Event: its name and one line of JSON."""
    return f"event: {name}\ndata: {strict_dumps(data)}\n\n"


class EventsQuery(Query):
    timeout: Seconds = Field(None, ge=STREAM_SECONDS[0], le=STREAM_SECONDS[1], description=(
        f"Close the stream after this many seconds without an end event (default {DEFAULT_STREAM_SECONDS}); the "
        "client reconnects"))


EVENTS = Operation("get", "/v1/jobs/{job_id}/events", "jobEvents", "The job's changes as Server-Sent Events, until it ends", {
    "200": {"description": "text/event-stream: event status (data: the Job) on open and on each change; event "
                           "progress (data: the job's progress) about once a second while it runs; a ': heartbeat' "
                           "comment when nothing else was sent for a while; event end (data: the Job) when it has "
                           "finished, then the stream closes; event error if the stream cannot go on",
            # OpenAPI 3.1: the schema of a text/event-stream is the schema of each event.
            "content": {"text/event-stream": {"schema": {
                "type": "object", "required": ["event", "data"],
                "properties": {"event": {"enum": ["status", "progress", "end", "error"]},
                               "data": {"type": "string", "contentMediaType": "application/json",
                                        "description": "One line of JSON: the Job (status, end), its Progress, "
                                                       "or an Error"}}}}}}},
    (400, 401, 403, 404, 503), EventsQuery)


@bp.get("/<job_id>/events")
def events(job_id: str) -> Response:
    svc = services()
    seconds = EVENTS.args().timeout or DEFAULT_STREAM_SECONDS
    job = job_store.get_job(svc.db, job_id, owner=caller().owner_filter)  # a 404 before the stream starts
    svc.waiters.take_for_stream()
    # The request's context stays for the stream: a job's JSON reads settings and the fleet.
    response = Response(stream_with_context(_stream(svc, job, seconds)), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(svc.waiters.give_back)
    return response


def _stream(svc: Services, job: JobRecord, seconds: float) -> Iterator[str]:
    deadline = time.monotonic() + seconds
    yield event("status", job_json(job))
    last_sent = time.monotonic()
    status, progress = job.status, None
    while not job.finished:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            job = svc.finished.wait(job.id, min(PROGRESS_SECONDS, left))
        except DescentError as exc:  # the job is gone, or the database is down: say so and close
            yield event("error", {"error": {"code": exc.code, "message": exc.message, "field": exc.field}})
            return
        except Exception:  # noqa: BLE001 - the stream has started: an error event is all there is left
            log.exception("event stream of job %s", job.id)
            yield event("error", {"error": {"code": "internal", "message": "the stream failed", "field": None}})
            return
        sent = False
        if job.status != status and not job.finished:
            status = job.status
            yield event("status", job_json(job))
            sent = True
        now_progress = progress_json(job)
        if job.status == JobStatus.RUNNING and now_progress is not None and not job.finished:
            progress = now_progress
            yield event("progress", progress)
            sent = True
        if sent:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
            last_sent = time.monotonic()
            yield ": heartbeat\n\n"
    yield event("end", job_json(job))
