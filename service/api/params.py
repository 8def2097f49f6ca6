"""Query parameters, parsed and bounded before a handler does any work.

Numbers are plain ASCII decimals: Python's ``int()`` and ``float()`` would also take " 5", "+5",
"1_0" and other scripts' digits, none of which the OpenAPI document allows.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from flask import Flask, request

from service.api.errors import bad_parameter

_INTEGER = re.compile(r"-?[0-9]{1,30}")
# An ISO-8601 date or time from 1970 to 2999, as the OpenAPI document states it (ISO_TIME_PATTERN).
ISO_TIME_PATTERN = (r"(?P<y>19[7-9][0-9]|2[0-9]{3})-(?P<mo>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12][0-9]|3[01])"
                    r"(?:[T ](?P<h>[01][0-9]|2[0-3]):(?P<mi>[0-5][0-9])(?::(?P<s>[0-5][0-9])(?:\.(?P<us>[0-9]{1,6}))?)?"
                    r"(?P<tz>[zZ]|(?P<sign>[+-])(?P<oh>[01][0-9]|2[0-3]):(?P<om>[0-5][0-9]))?)?")
_ISO_TIME = re.compile(ISO_TIME_PATTERN)
# The same, as the document states it (JSON Schema's regular expressions have no named groups).
ISO_TIME = "^" + re.sub(r"\?P<[a-z]+>", "?:", ISO_TIME_PATTERN) + "$"
# A string in a spec may hold no NUL (nor a lone surrogate, which no JSON Schema pattern can name).
STORABLE_TEXT = r"^[^\x00]*$"
_DECIMAL = re.compile(r"-?[0-9]{1,20}(\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?")


def int_arg(name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):
        raise bad_parameter(name, f"'{name}' must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_parameter(name, f"'{name}' must be {bound}")
    return value


def seconds_arg(name: str, low: float, high: float) -> float | None:
    """A number of seconds from ``low`` to ``high``, or None when the parameter is absent."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    value = float(raw) if _DECIMAL.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        raise bad_parameter(name, f"'{name}' must be a number of seconds from {low:g} to {high:g}")
    return value


def parse_time(raw: str | None) -> datetime | None:
    """An ISO-8601 date or time from 1970 to 2999 (``2026-11-28``, ``2026-11-28T04:30:00Z``; UTC
    when no offset is given) that matched ``ISO_TIME``, or None. A day past its month's end
    counts on into the next month (``2026-02-30`` is 2 March), as the pattern cannot tell."""
    match = _ISO_TIME.fullmatch(raw) if raw else None
    if match is None:
        return None
    part = {k: int(v) for k, v in match.groupdict().items() if v is not None and k not in ("tz", "sign", "us")}
    micro = int((match["us"] or "0").ljust(6, "0"))
    offset = timedelta(hours=part.get("oh", 0), minutes=part.get("om", 0)) * (-1 if match["sign"] == "-" else 1)
    return (datetime(part["y"], part["mo"], 1, tzinfo=timezone.utc)
            + timedelta(days=part["d"] - 1, hours=part.get("h", 0), minutes=part.get("mi", 0),
                        seconds=part.get("s", 0), microseconds=micro) - offset)


def text_arg(name: str, max_chars: int = 600) -> str | None:
    """A text parameter, refused when it holds a control character (NUL among them: the
    database cannot even compare with one) or is over ``max_chars``."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_chars or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in raw):
        raise bad_parameter(name, f"'{name}' must be at most {max_chars} characters, with no control characters")
    return raw


def register(app: Flask, document: dict) -> None:  # type: ignore[type-arg]
    """Parse each declared operation's query parameters (``service.api.operations``) before its
    handler runs, refusing any it does not take; an operation not yet declared (the tensors') has
    the names it takes read from the OpenAPI ``document``."""
    from service.api.operations import declared

    operations = declared()
    taken: dict[tuple[str, str], set[str]] = {
        (path, method): {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        for path, item in document["paths"].items() for method, operation in item.items()
        if (path, method) not in operations}

    @app.before_request
    def _known_parameters() -> None:
        if request.url_rule is None:
            return
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", request.url_rule.rule)
        operation = operations.get((path, request.method.lower()))
        if operation is not None:
            operation.args()
            return
        names = taken.get((path, request.method.lower()))
        if names is None:
            return
        for name in request.args:
            if name not in names:
                takes = ", ".join(sorted(names)) or "none"
                raise bad_parameter(name[:40], f"unknown query parameter {name[:40]!r}; this endpoint takes: {takes}")
