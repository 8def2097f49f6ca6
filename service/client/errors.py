"""The client's errors: every failure is a ``DescentClientError``; no answer at all is its
subclass ``DescentUnreachable``."""
from __future__ import annotations

import re
from typing import Any

import requests


class DescentClientError(Exception):
    """An error answer of the API, or a request that could not be made.

    ``str(err)`` is one line: the API's message. ``status`` is the HTTP status (None when no answer
    came), ``code`` and ``field`` the API's error code and the request field it names, ``body``
    the parsed error answer (None when it was not JSON)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 field: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.field, self.body = message, status, code, field, body

    @classmethod
    def from_response(cls, resp: requests.Response) -> DescentClientError:
        try:
            body = resp.json()
            error = body["error"]
            return cls(str(error.get("message") or error.get("code")), resp.status_code, error.get("code"),
                       error.get("field"), body)
        except (ValueError, KeyError, TypeError, AttributeError):
            text = " ".join(resp.text.split())[:200] or resp.reason or "no message"
            return cls(f"HTTP {resp.status_code}: {text}", resp.status_code)


class DescentUnreachable(DescentClientError):
    """No answer from the API at all (connection refused, DNS, timeout, a connection cut short)."""


def reason(exc: Exception) -> str:
    """The short cause inside a requests exception ('Connection refused', 'timed out')."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = re.findall(r"\[Errno -?\d+\] ([^'\"()\]]+)", str(exc))
    if found:
        return found[-1].strip().rstrip(".")
    return type(exc).__name__
