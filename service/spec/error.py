"""The spec's refusal: one kind of ``DescentError``, raised by every admission check."""
from __future__ import annotations

from service.errors import DescentError, ErrorCode


class SpecError(DescentError):
    """A refused spec: the field at fault (a dotted path) and why."""

    code = ErrorCode.INVALID_SPEC

    def __init__(self, field: str | None, message: str, code: ErrorCode | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code, field=field, status=status)
