"""The API's HTTP server: waitress, with the refusals waitress makes itself (a body over
``max_request_body_size``, a malformed request line or header, headers too large) answered in
the API's one error shape, ``{"error": {"code", "message", "field"}}``, instead of waitress's
plain-text page."""
from __future__ import annotations

import json
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from service.errors import ErrorCode

# waitress's own refusals by status: the API's code for each (anything else is internal).
_CODES = {400: ErrorCode.INVALID_HEADER, 413: ErrorCode.BODY_TOO_LARGE, 431: ErrorCode.INVALID_HEADER,
          501: ErrorCode.INVALID_HEADER}


def refusal_body(code: int, detail: str, max_body_bytes: int) -> bytes:
    """The JSON body of one of waitress's refusals (``detail`` is waitress's own words)."""
    error = _CODES.get(code, ErrorCode.INTERNAL)
    if error == ErrorCode.BODY_TOO_LARGE:
        message = f"the request body is over the limit of {max_body_bytes:,} bytes (max_body_bytes)"
    elif error == ErrorCode.INTERNAL:
        message = "an unexpected error occurred; it has been logged"
    else:
        message = f"the request is malformed: {detail.strip()[:200] or 'refused by the server'}"
    return json.dumps({"error": {"code": str(error), "message": message, "field": None}}).encode()


def serve(app: Any, *, host: str, port: int, threads: int, max_body_bytes: int) -> None:
    """Serve ``app`` until the process is stopped."""
    make_server(app, host=host, port=port, threads=threads, max_body_bytes=max_body_bytes).run()


def make_server(app: Any, *, host: str, port: int, threads: int, max_body_bytes: int) -> Any:
    """A waitress server for ``app``, bound and not yet running (``port`` 0 picks a free one)."""

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:  # type: ignore[no-untyped-def]
            error = self.request.error
            body = refusal_body(error.code, str(error.body), max_body_bytes)
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    # waitress refuses a body over the limit from its Content-Length, before buffering any of it
    # (it refuses a length >= its setting; Flask accepts exactly the limit). Connections beyond
    # the threads wait in waitress's queue rather than being refused.
    server = create_server(app, host=host, port=port, threads=threads, connection_limit=threads + 256,
                           asyncore_use_poll=True, ident="descent", max_request_body_size=max_body_bytes + 1)
    server.channel_class = JsonErrorChannel  # type: ignore[union-attr]
    return server
