"""Schemathesis hooks for scripts/fuzz.sh: two adjustments to generated requests, both keeping a
request inside the document's own rules (nothing here hides a failure).

- ``GET /v1/jobs/{job_id}?wait=S``: S may be up to 30 seconds, and with no worker running a job
  never finishes, so every wait on a real job (the stateful phase follows links to them) would
  hold its request for the whole S (past Schemathesis's request timeout). A valid wait over 0.1 s
  becomes 0.1 s, still a valid value; values outside 0..30 (the negative cases: -1, 30.5, 'abc')
  are sent as written. tests/api/test_openapi.py checks that 30 is accepted and 30.5 refused.
- ``GET /v1/jobs/{job_id}/events``: a stream of a job that never finishes stays open for its
  ``timeout`` (300 s when absent), so a positive case's timeout (absent, or over 1 s) becomes 1 s,
  still a valid value; out-of-range values are sent as written.
- ``GET /v1/jobs?cursor=``: a cursor is opaque, valid only if this service returned it; no schema
  can describe that, so a *positive* case keeps its cursor only if the service's own decoder
  reads it (real cursors come from the listJobs -> listJobs link). Negative cases are untouched.
  A sweep's summary and jobs cursors are as opaque: a positive case drops a generated one (the
  stateful phase follows the real ones through the links).
"""
from __future__ import annotations

import math
from typing import Any

import schemathesis

from service.store.jobs import decode_cursor

WAIT_CAP = 0.1
SWEEP_PAGES = ("/v1/sweeps/{sweep_id}", "/v1/sweeps/{sweep_id}/jobs")
WAIT_BOUNDS = (0.0, 30.0)
STREAM_CAP = 1.0
STREAM_BOUNDS = (1.0, 3600.0)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _readable_cursor(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        decode_cursor(value)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


@schemathesis.hook
def map_case(context, case):  # type: ignore[no-untyped-def]
    operation = case.operation
    method, path = operation.method.upper(), operation.path
    if method == "GET" and path == "/v1/jobs/{job_id}/events":
        query = case.query if isinstance(case.query, dict) else {}
        # An empty timeout is no timeout (the handler reads `timeout=` as absent): capped too.
        timeout = _number(query.get("timeout")) if query.get("timeout") not in (None, "") else STREAM_CAP + 1
        if timeout is not None and STREAM_CAP < timeout <= STREAM_BOUNDS[1]:
            case.query = {**query, "timeout": str(STREAM_CAP)}
        return case
    query = case.query
    if not isinstance(query, dict):
        return case
    if method == "GET" and path == "/v1/jobs/{job_id}" and "wait" in query:
        wait = _number(query["wait"])
        if wait is not None and WAIT_CAP < wait <= WAIT_BOUNDS[1]:
            case.query = {**query, "wait": str(WAIT_CAP)}
    elif method == "GET" and query.get("cursor") and path in SWEEP_PAGES + ("/v1/jobs",):
        meta = case.meta
        positive = meta is not None and meta.generation.mode.is_positive
        if positive and (path in SWEEP_PAGES or not _readable_cursor(query["cursor"])):
            case.query = {k: v for k, v in query.items() if k != "cursor"}
    return case
