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
    the parsed error answer (None when it was not JSON).

    ``idempotency_key`` is the ``Idempotency-Key`` the failed request was sent with (a submit's,
    None for a request without one). Where the request may have done its work unseen (no answer,
    or a 5xx: ``unsure``), the message names the key too: sending the request again with the same
    key makes one job (or sweep), never a second. ``detail`` is the message without that note."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 field: str | None = None, body: Any = None, idempotency_key: str | None = None) -> None:
        self.detail, self.idempotency_key = message, idempotency_key
        # Whether the request may have done its work unseen: its message then names its key.
        self.unsure = idempotency_key is not None and (status is None or status >= 500)
        if self.unsure:
            message = with_note(message, key_note(idempotency_key))  # type: ignore[arg-type]
        super().__init__(message)
        self.message, self.status, self.code, self.field, self.body = message, status, code, field, body

    @classmethod
    def from_response(cls, resp: requests.Response, idempotency_key: str | None = None) -> DescentClientError:
        try:
            body = resp.json()
            error = body["error"]
            return cls(str(error.get("message") or error.get("code")), resp.status_code, error.get("code"),
                       error.get("field"), body, idempotency_key)
        except (ValueError, KeyError, TypeError, AttributeError):
            text = " ".join(resp.text.split())[:200] or resp.reason or "no message"
            return cls(f"HTTP {resp.status_code}: {text}", resp.status_code, idempotency_key=idempotency_key)


class DescentUnreachable(DescentClientError):
    """No answer from the API at all (connection refused, DNS, timeout, a connection cut short).

    For a submit, ``idempotency_key`` is the key it was sent with (given, or generated): the API
    may have made the job before the connection was lost, so submit again with that key
    (``client.submit(spec, idempotency_key=err.idempotency_key)``) to get that job, or one new job
    if none was made, never two."""


def key_note(key: str, how: str | None = None) -> str:
    """The sentence that tells a user how to send a keyed request again safely."""
    how = how or f"idempotency_key={key!r}"
    return (f"It was sent with Idempotency-Key {key}: send it again with that key ({how}) to get the one "
            "job or sweep it made, or one new one, never two.")


def with_note(message: str, note: str) -> str:
    """``message`` and then ``note``, as sentences of one line."""
    return f"{message}{'' if message.endswith(('.', '?', '!')) else '.'} {note}"


def reason(exc: Exception) -> str:
    """The short cause inside a requests exception ('Connection refused', 'timed out')."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = re.findall(r"\[Errno -?\d+\] ([^'\"()\]]+)", str(exc))
    if found:
        return found[-1].strip().rstrip(".")
    return type(exc).__name__
