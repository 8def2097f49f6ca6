"""One error type for the API, rendered as ``{"error": {"code", "message", "field"}}``."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.spec import SpecError
from service.store import Conflict, NotFound, StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _body(code: str, message: str, field: str | None = None):  # type: ignore[no-untyped-def]
    return jsonify({"error": {"code": code, "message": message, "field": field}})


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(err: ApiError):  # type: ignore[no-untyped-def]
        return _body(err.code, err.message, err.field), err.status

    @app.errorhandler(SpecError)
    def _spec(err: SpecError):  # type: ignore[no-untyped-def]
        return _body(err.code, err.message, err.field), err.status

    @app.errorhandler(NotFound)
    def _missing(err: NotFound):  # type: ignore[no-untyped-def]
        return _body("not_found", str(err)), 404

    @app.errorhandler(Conflict)
    def _conflict(err: Conflict):  # type: ignore[no-untyped-def]
        return _body("conflict", str(err)), 409

    @app.errorhandler(StoreUnavailable)
    def _down(err: StoreUnavailable):  # type: ignore[no-untyped-def]
        resp = _body("database_unavailable", f"{err}; try again shortly")
        return resp, 503, {"Retry-After": "2"}

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):  # type: ignore[no-untyped-def]
        code = (err.name or "error").lower().replace(" ", "_")
        message = err.description or err.name
        if err.code == 413:
            code = "body_too_large"
            message = f"the request body is over the limit of {app.config['MAX_CONTENT_LENGTH']:,} bytes (max_body_bytes)"
        return _body(code, message), err.code or 500

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return _body("internal_error", "an unexpected error occurred; it has been logged"), 500
