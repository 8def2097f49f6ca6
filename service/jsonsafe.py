"""JSON has no NaN or infinity; Descent writes them as the strings "NaN", "Infinity" and
"-Infinity" wherever a float leaves the process (API responses, stored results)."""
from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def strict_dumps(value: Any, **kwargs: Any) -> str:
    """JSON text of ``value`` that every strict parser accepts: non-finite floats become the
    strings above, wherever they are, and anything else non-standard raises rather than leak."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
