"""Query parameters, parsed and bounded before a handler does any work: each declared operation's
query model (``service.api.operations``) checks them in a ``before_request``; the time and text
patterns the models use are here."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from flask import Flask, request


# An ISO-8601 date or time from 1970 to 2999, as the OpenAPI document states it (ISO_TIME_PATTERN).
ISO_TIME_PATTERN = (r"(?P<y>19[7-9][0-9]|2[0-9]{3})-(?P<mo>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12][0-9]|3[01])"
                    r"(?:[T ](?P<h>[01][0-9]|2[0-3]):(?P<mi>[0-5][0-9])(?::(?P<s>[0-5][0-9])(?:\.(?P<us>[0-9]{1,6}))?)?"
                    r"(?P<tz>[zZ]|(?P<sign>[+-])(?P<oh>[01][0-9]|2[0-3]):(?P<om>[0-5][0-9]))?)?")
_ISO_TIME = re.compile(ISO_TIME_PATTERN)
# The same, as the document states it (JSON Schema's regular expressions have no named groups).
ISO_TIME = "^" + re.sub(r"\?P<[a-z]+>", "?:", ISO_TIME_PATTERN) + "$"
# A string in a spec may hold no NUL (nor a lone surrogate, which no JSON Schema pattern can name).
STORABLE_TEXT = r"^[^\x00]*$"


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


def register(app: Flask) -> None:
    """Parse each declared operation's query parameters (``service.api.operations``) before its
    handler runs, refusing any it does not take."""
    from service.api.operations import declared

    operations = declared()

    @app.before_request
    def _known_parameters() -> None:
        if request.url_rule is None:
            return
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", request.url_rule.rule)
        operation = operations.get((path, request.method.lower()))
        if operation is not None:
            operation.args()
