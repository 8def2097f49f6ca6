"""Query parameters, parsed and bounded before a handler does any work."""
from __future__ import annotations

from flask import request

from service.api.errors import bad_parameter


def int_arg(name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter(name, f"'{name}' must be an integer, got {raw[:40]!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_parameter(name, f"'{name}' must be {bound}")
    return value
