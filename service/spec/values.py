"""What any number and any string in a job spec must be, wherever it sits.

A spec is stored as JSON (PostgreSQL ``jsonb`` on the server) and echoed back by the API, and its
numbers reach torch. So every number must be finite and within ``MAX_MAGNITUDE`` (``NaN`` and
``Infinity``, which Python's ``json`` accepts, would be echoed as invalid JSON; ``1e308`` overflows
float32), and no string may hold a NUL (PostgreSQL cannot store one in text or JSON) or a lone
surrogate (``"\\ud800"`` decodes to one; it is not Unicode and cannot be encoded as UTF-8).
``first_unstorable`` walks a raw spec, keys and values, before anything else reads it.
"""
from __future__ import annotations

import re
from typing import Any

from service.config import Limits

MAX_MAGNITUDE: float = Limits.max_constant  # the objective language's bound on a constant, 1e12
MAX_NESTING = 32  # levels of lists and objects in a spec, x0's numbers aside
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def in_range(value: int | float) -> bool:
    """Finite and within ``MAX_MAGNITUDE``; false for NaN (every comparison with it is false),
    and exact for integers of any size (no conversion to float, so no OverflowError)."""
    return -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None if it can (one regex scan: the objective may be
    megabytes long before its own length check)."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "holds a NUL character (U+0000), which cannot be stored"
    return f"holds a lone surrogate (U+{ord(found.group()):04X}), which is not valid Unicode"


def first_unstorable(data: dict[str, Any]) -> tuple[str | None, str] | None:
    """The first string (key or value) in a raw spec that cannot be stored, or a nesting deeper
    than ``MAX_NESTING``: ``(field, message)``, or None when all is well. x0 given as a list is
    skipped (up to millions of numbers; ``_nested_shape`` refuses anything else in it)."""
    stack: list[tuple[str | None, Any, int]] = [(None, data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_NESTING:
            return path, f"'{path}' nests more than {MAX_NESTING} levels"
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                return path, f"'{path}' {problem}"
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = text_problem(key) if isinstance(key, str) else None
                if problem:
                    return path, f"a key in '{path or 'the spec'}' {problem}"
                child = f"{path}.{key}" if path else str(key)
                if not (child == "x0" and isinstance(item, list)):
                    stack.append((child, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((path, item, depth + 1) for item in value)
    return None
