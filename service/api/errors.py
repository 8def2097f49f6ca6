"""Every error the API answers with is JSON: ``{"error": {"code", "message", "field"}}``.

One handler renders every ``DescentError`` (spec refusals, store errors, bad parameters) with its
own status and headers; Werkzeug's HTTP errors and anything unexpected get the same shape.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.errors import DescentError, ErrorCode

log = logging.getLogger(__name__)


def bad_parameter(name: str, message: str) -> DescentError:
    """A refused query parameter or header, named."""
    return DescentError(message, code=ErrorCode.INVALID_PARAMETER, field=name)


def _body(code: str, message: str, field: str | None = None):  # type: ignore[no-untyped-def]
    return jsonify({"error": {"code": code, "message": message, "field": field}})


def _kept_headers(err: HTTPException) -> list[tuple[str, str]]:
    """Werkzeug's headers for ``err`` (``Allow`` on a 405, ``Retry-After``, ``WWW-Authenticate``),
    less its HTML ``Content-Type``: the JSON body brings its own."""
    return [(name, value) for name, value in err.get_headers() if name.lower() != "content-type"]


def register(app: Flask) -> None:
    @app.errorhandler(DescentError)
    def _descent(err: DescentError):  # type: ignore[no-untyped-def]
        return _body(err.code, err.message, err.field), err.status, err.headers

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):  # type: ignore[no-untyped-def]
        code = (err.name or "error").lower().replace(" ", "_")
        message = err.description or err.name
        if err.code == 413:
            code = ErrorCode.BODY_TOO_LARGE
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = (f"the request body is over the limit of {limit:,} bytes (max_body_bytes)" if limit is not None
                       else "the request body is over the limit (max_body_bytes)")
        return _body(code, message), err.code or 500, _kept_headers(err)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return _body(ErrorCode.INTERNAL, "an unexpected error occurred; it has been logged"), 500
