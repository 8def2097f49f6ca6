"""One log line per request: method, path, status and duration, and the job (or sweep) it is
about: the one in the path, or the one a submission made (its ``Location``). Every other line
logged while a request to ``/v1/jobs/<id>/...`` is served names that job too.

A streamed answer (a history download, an event stream) is logged when its headers go out; the
stream itself is not timed. Headers are never logged, so neither is a token.
"""
from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask, Response, g, request

from service.logs import job_logging

log = logging.getLogger("descent.access")
_MADE = {"/v1/jobs/": "job_id", "/v1/sweeps/": "sweep_id"}


def register(app: Flask) -> None:
    @app.before_request
    def _started() -> None:
        g.request_started = time.perf_counter()
        job = (request.view_args or {}).get("job_id")
        if job:
            naming: AbstractContextManager[None] = job_logging([job])
            naming.__enter__()
            g.job_logging = naming

    @app.teardown_request
    def _finished(exc: BaseException | None) -> None:
        naming = g.pop("job_logging", None)
        if naming is not None:
            try:
                naming.__exit__(None, None, None)
            except ValueError:  # torn down in another context than it was set in: nothing to undo there
                pass

    @app.after_request
    def _logged(response: Response) -> Response:
        started = g.get("request_started")
        took = round(1000 * (time.perf_counter() - started), 3) if started is not None else None
        args = request.view_args or {}
        extra: dict[str, Any] = {"method": request.method, "path": request.path, "status": response.status_code,
                                 "duration_ms": took}
        for key in ("job_id", "sweep_id"):
            if args.get(key):
                extra[key] = args[key]
        made = response.headers.get("Location", "") if request.method == "POST" else ""
        for prefix, key in _MADE.items():
            if made.startswith(prefix) and key not in extra:
                extra[key] = made[len(prefix):]
        shown = repr(request.path)[1:-1]  # a %0A in a path must not start a new log line
        log.info("%s %s %s %s ms", request.method, shown, response.status_code, took, extra=extra)
        return response
