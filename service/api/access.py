"""One log line per request: method, path, status and duration, and the job it is about.

A streamed answer (a history download, an event stream) is logged when its headers go out; the
stream itself is not timed. Headers are never logged, so neither is a token.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

log = logging.getLogger("descent.access")


def register(app: Flask) -> None:
    @app.before_request
    def _started() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _logged(response: Response) -> Response:
        started = g.get("request_started")
        took = round(1000 * (time.perf_counter() - started), 3) if started is not None else None
        job = (request.view_args or {}).get("job_id")
        extra = {"method": request.method, "path": request.path, "status": response.status_code, "duration_ms": took}
        if job:
            extra["job_id"] = job
        shown = repr(request.path)[1:-1]  # a %0A in a path must not start a new log line
        log.info("%s %s %s %s ms", request.method, shown, response.status_code, took, extra=extra)
        return response
