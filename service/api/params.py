"""Query parameters, parsed and bounded before a handler does any work.

Numbers are plain ASCII decimals: Python's ``int()`` and ``float()`` would also take " 5", "+5",
"1_0" and other scripts' digits, none of which the OpenAPI document allows.
"""
from __future__ import annotations

import re

from flask import Flask, request

from service.api.errors import bad_parameter

_INTEGER = re.compile(r"-?[0-9]{1,30}")
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
    """Refuse a query parameter the endpoint does not take (400 naming it), with the names each
    endpoint takes read from the OpenAPI ``document``, so the two cannot disagree."""
    taken: dict[tuple[str, str], set[str]] = {
        (path, method): {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        for path, operations in document["paths"].items() for method, operation in operations.items()}

    @app.before_request
    def _known_parameters() -> None:
        if request.url_rule is None:
            return
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", request.url_rule.rule)
        names = taken.get((path, request.method.lower()))
        if names is None:
            return
        for name in request.args:
            if name not in names:
                takes = ", ".join(sorted(names)) or "none"
                raise bad_parameter(name[:40], f"unknown query parameter {name[:40]!r}; this endpoint takes: {takes}")
