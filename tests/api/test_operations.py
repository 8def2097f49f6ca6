"""``service.api.operations``: each operation's query model parses what its handler reads, and the
document's parameters are made of the same models (no app, no database: a request context only)."""
from __future__ import annotations

from typing import Any

import annotated_types
import pytest
from flask import Flask

from service.api.openapi import document
from service.api.operations import declared
from service.errors import DescentError

APP = Flask(__name__)

# The wire contract's numeric bounds (a change here is a change of the API).
NUMERIC_PARAMS = [
    ("/v1/jobs", "limit", (1, 1000)),
    ("/v1/jobs/{job_id}", "wait", (0, 30)),
    ("/v1/jobs/{job_id}/history", "start", (0, 2_147_483_647)),
    ("/v1/jobs/{job_id}/history", "limit", (1, 100_000)),
    ("/v1/jobs/{job_id}/history", "every", (1, 2_147_483_647)),
    ("/v1/jobs/{job_id}/history", "points", (1, 100_000)),
    ("/v1/jobs/{job_id}/events", "timeout", (1, 3600)),
    ("/v1/jobs/{job_id}/surface", "n", (2, 400)),
    ("/v1/jobs/{job_id}/plot.png", "n", (2, 400)),
    ("/v1/jobs/{job_id}/x", "step", (0, 2_147_483_647)),
    ("/v1/jobs/{job_id}/grad", "step", (0, 2_147_483_647)),
    ("/v1/sweeps", "limit", (1, 1000)),
    ("/v1/sweeps/{sweep_id}", "limit", (1, 1000)),
    ("/v1/sweeps/{sweep_id}/jobs", "limit", (1, 1000)),
]


def parse(path: str, query: str) -> Any:
    operation = declared()[(path, "get")]
    with APP.test_request_context(f"/?{query}"):
        return operation.args()


def refusal(path: str, query: str) -> DescentError:
    with pytest.raises(DescentError) as caught:
        parse(path, query)
    assert caught.value.code == "invalid_parameter"
    return caught.value


def numeric_fields() -> list[tuple[str, str, int | float, int | float, bool]]:
    found = []
    for (path, method), operation in sorted(declared().items()):
        for name, info in (operation.query.model_fields.items() if operation.query else []):
            low = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
            high = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
            if low is not None and high is not None:
                found.append((path, name, low, high, info.annotation is int))
    return found


def test_the_documented_bounds_are_the_contract():
    doc = document()
    for path, name, bounds in NUMERIC_PARAMS:
        [param] = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name]
        assert (param["schema"]["minimum"], param["schema"]["maximum"]) == bounds, (path, name)
        assert param["allowEmptyValue"] is True  # `name=` is absent
    assert {(p, n) for p, n, *_ in numeric_fields()} == {(p, n) for p, n, _ in NUMERIC_PARAMS}


@pytest.mark.parametrize("path, name, low, high, integer", numeric_fields(), ids=lambda v: str(v))
def test_every_numeric_parameter_is_held_to_its_bounds(path, name, low, high, integer):
    assert getattr(parse(path, f"{name}={low}"), name) == low
    assert getattr(parse(path, f"{name}={high}"), name) == high
    step = 1 if integer else 0.5
    for bad in (low - step, high + step, "x", "%205", "%2B5", "1_0", "%D9%A5", "1e400" if not integer else "1.5"):
        assert refusal(path, f"{name}={bad}").field == name, bad
    parse(path, f"{name}=")  # absent


def test_messages_name_the_parameter_and_say_what_it_takes():
    assert "0 to 30" in refusal("/v1/jobs/{job_id}", "wait=31").message
    assert refusal("/v1/jobs", "limit=0").message == "'limit' must be between 1 and 1000"
    assert "must be an integer" in refusal("/v1/jobs", "limit=x").message
    assert refusal("/v1/jobs", "order=up").message == "'order' must be asc (oldest first) or desc (newest first)"
    assert "control characters" in refusal("/v1/jobs", "tag=a%01:b").message
    unknown = refusal("/v1/jobs", "limt=5")
    assert unknown.field == "limt" and "unknown query parameter 'limt'" in unknown.message and "limit" in unknown.message
    assert refusal("/v1/jobs/{job_id}/history", "format=").field == "format"  # `format=` is not absent


def test_defaults_and_times():
    page = parse("/v1/jobs", "")
    assert (page.limit, page.order, page.cursor) == (50, "asc", None)
    assert parse("/v1/jobs", "created_after=2026-11-28T04:30:00Z").created_after == "2026-11-28T04:30:00Z"
    for bad in ("2026-13-01", "2026-11-28%0A", "1969-12-31"):
        assert refusal("/v1/jobs", f"created_after={bad}").field == "created_after", bad
