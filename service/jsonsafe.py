"""JSON has no NaN or infinity; Descent writes them as the strings "NaN", "Infinity" and
"-Infinity" wherever a float leaves the process (API responses, stored results)."""
from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string. A container that has none (nearly
    all) is handed back as it is, after one pass of the C encoder instead of a walk in Python."""
    if isinstance(value, (dict, list, tuple)):
        try:
            json.dumps(value, allow_nan=False)
            return value
        except (ValueError, TypeError):
            pass
    return _walk(value)


def _walk(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _walk(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v) for v in value]
    return value


def strict_dumps(value: Any, **kwargs: Any) -> str:
    """JSON text of ``value`` that every strict parser accepts: non-finite floats become the
    strings above, wherever they are, and anything else non-standard raises rather than leak.
    One pass of the encoder when there are none (a megabytes-long x was encoded twice)."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(_walk(value), allow_nan=False, **kwargs)
