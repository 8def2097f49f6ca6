"""Descent's one error type: a ``DescentError`` carries a machine-readable ``ErrorCode``, a
message for people, the field at fault (a dotted path into the request, or None) and the HTTP
status the API answers with (from ``HTTP_STATUS``, unless the raiser knows better, as a limit
that is 413 rather than 400). The API renders every one the same way:
``{"error": {"code", "message", "field"}}``. Modelled on MLflow's ``MlflowException`` and its
``ERROR_CODE_TO_HTTP_STATUS``.
"""
from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_SPEC = "invalid_spec"
    INVALID_EXPRESSION = "invalid_expression"
    INVALID_OPTIMIZER = "invalid_optimizer"
    INVALID_SCHEDULER = "invalid_scheduler"
    LIMIT_EXCEEDED = "limit_exceeded"
    INVALID_PARAMETER = "invalid_parameter"
    INVALID_HEADER = "invalid_header"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    QUOTA_EXCEEDED = "quota_exceeded"
    SERVICE_BUSY = "service_busy"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    DATABASE_UNAVAILABLE = "database_unavailable"
    INVALID_SETTING = "invalid_setting"
    JOB_CANNOT_RUN = "job_cannot_run"
    INTERNAL = "internal_error"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400, ErrorCode.INVALID_SPEC: 400, ErrorCode.INVALID_EXPRESSION: 400,
    ErrorCode.INVALID_OPTIMIZER: 400, ErrorCode.INVALID_SCHEDULER: 400, ErrorCode.LIMIT_EXCEEDED: 400,
    ErrorCode.INVALID_PARAMETER: 400, ErrorCode.INVALID_HEADER: 400, ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415, ErrorCode.UNAUTHORIZED: 401, ErrorCode.FORBIDDEN: 403,
    ErrorCode.QUOTA_EXCEEDED: 429, ErrorCode.SERVICE_BUSY: 503,
    ErrorCode.NOT_FOUND: 404, ErrorCode.CONFLICT: 409, ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.INVALID_SETTING: 500, ErrorCode.JOB_CANNOT_RUN: 500, ErrorCode.INTERNAL: 500,
}


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of an error's message (its type's name when it has none), at most
    ``limit`` characters: what a person is shown of an error raised by a library."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


class DescentError(Exception):
    """Base of every error Descent raises on purpose; subclasses set a default ``code``."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None, field: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or type(self).code
        self.field = field
        self.status = status or HTTP_STATUS[self.code]
        self.headers = headers or {}

    def __reduce__(self) -> tuple:  # type: ignore[type-arg]
        """Survives pickling (a process boundary) with every attribute, whatever the subclass's
        constructor takes."""
        return _rebuild, (type(self), self.message, self.code, self.field, self.status, self.headers)


def _rebuild(cls: type[DescentError], message: str, code: ErrorCode, field: str | None, status: int,
             headers: dict[str, str]) -> DescentError:
    error = Exception.__new__(cls)
    Exception.__init__(error, message)
    error.message, error.code, error.field, error.status, error.headers = message, code, field, status, headers
    return error
