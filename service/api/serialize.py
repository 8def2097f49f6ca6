"""JSON and CSV shapes of jobs and history rows, as the API returns them."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

import numpy as np

from service.api.fleet import gpu_worker_alive
from service.api.schemas import JobView
from service.api.services import services
from service.jsonsafe import json_safe
from service.status import WAITING_FOR_GPU
from service.store import JobRecord, JobStatus
from service.store import tensors as job_tensors

HISTORY_FIELDS = ("step", "f", "grad_norm", "lr", "x", "grad")


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def job_json(job: JobRecord, include: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The job as the API answers it, built through the ``JobView`` model that ``/openapi.json`` describes;
    its result's x and grad inline if small or named in ``include``."""
    return job_model(job, include).dump()


def job_model(job: JobRecord, include: frozenset[str] = frozenset()) -> JobView:
    """The job as a ``JobView`` (a page of jobs holds these: a model inside a model is not validated again)."""
    return JobView.model_validate({
        "id": job.id, "owner": job.owner, "status": job.status, "name": job.name, "tags": job.tags, "spec": job.spec,
        "queue": job.queue, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "worker": job.worker, "attempts": job.attempts,
        "cancel_requested": job.cancel_requested, "error": job.error, "result": result_json(job, include),
        "progress": progress_json(job), "history_dropped_at": job.history_dropped_at, **_fleet_view(job),
        "sweep": None if job.sweep_id is None else {"id": job.sweep_id, "index": job.sweep_index,
                                                    "href": f"/v1/sweeps/{job.sweep_id}"},
        "links": {"self": f"/v1/jobs/{job.id}", "history": f"/v1/jobs/{job.id}/history",
                  "events": f"/v1/jobs/{job.id}/events"},
    })


def result_json(job: JobRecord, include: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """The job's result as answered: an x or grad of more than ``DESCENT_INLINE_ELEMENTS`` elements
    as its summary and a link to its values, unless ``include`` names it (then its values, read
    from where they are kept)."""
    result = job.result
    if not result:
        return result
    out, limit = dict(result), services().settings.inline_elements
    for name in job_tensors.NAMES:
        entry = out.get(name)
        if entry is None:
            continue
        href = f"/v1/jobs/{job.id}/{name}"
        if job_tensors.is_summary(entry):
            if name in include:
                values = job_tensors.load(services().db, job.id, name)
                if values is not None:
                    out[name] = _json_values(values, list(values.shape))
                    continue
            out[name] = {**entry, "href": href}
        elif name not in include and math.prod(job.shape) > limit:
            out[name] = {**job_tensors.summary(job_tensors.as_array(entry)), "href": href}
    return json_safe(out)


def _fleet_view(job: JobRecord) -> dict[str, Any]:
    """What the fleet means for the job: why a queued gpu job waits (no GPU worker heartbeats),
    and, for a running job whose worker stopped heartbeating, since when it is lost and when the
    job will be taken back (its lease lapses; a reconciler then queues it again)."""
    view: dict[str, Any] = {"waiting": None, "worker_lost_at": None, "reclaim_at": None}
    if job.status == JobStatus.QUEUED and job.queue == "gpu" and not gpu_worker_alive():
        view["waiting"] = WAITING_FOR_GPU
    elif job.status == JobStatus.RUNNING and job.worker_seen_at is not None:
        lost_at = job.worker_seen_at + timedelta(seconds=services().settings.worker_lost_seconds)
        if lost_at <= datetime.now(timezone.utc):
            view["worker_lost_at"], view["reclaim_at"] = lost_at, job.lease_expires_at
    return view


def progress_json(job: JobRecord) -> dict[str, Any] | None:
    """Where the job stands: as its worker last wrote it (with each history chunk), or, once it
    has a result, where it ended. None before its first chunk."""
    result = job.result
    if job.finished and result and "steps" in result:
        return {"step": result["steps"], "steps": job.spec.get("steps", result["steps"]),
                "f": json_safe(result.get("f")), "grad_norm": json_safe(result.get("grad_norm")),
                "updated_at": iso(job.finished_at)}
    return job.progress


def reshape(flat: list[float], shape: list[int]) -> Any:
    """A flat list as nested lists of ``shape`` (the shape of the job's x)."""
    out: Any = flat
    for dim in reversed(shape[1:]):
        out = [out[i:i + dim] for i in range(0, len(out), dim)]
    return out


def row_json(row: dict[str, Any], fields: Iterable[str], shape: list[int]) -> dict[str, Any]:
    """A history row as JSON: x and grad (flat lists or float64 arrays) nested to ``shape``."""
    out: dict[str, Any] = {}
    for name in fields:
        value = row.get(name)
        if name in ("x", "grad"):
            if value is not None:
                out[name] = _json_values(value, shape)
        elif name == "step":
            out[name] = value
        else:
            out[name] = json_safe(value)
    return out


def _json_values(value: Any, shape: list[int]) -> Any:
    if isinstance(value, np.ndarray):
        if bool(np.isfinite(value).all()):
            return reshape(value.tolist(), shape)  # nothing to rewrite: skip a copy of the row
        value = value.tolist()
    return json_safe(reshape(value, shape))


# A wide x or grad is formatted this many values at a time, so no one piece of text is a whole row.
CSV_VALUES_PER_PIECE = 16_384
JSON_VALUES_PER_PIECE = CSV_VALUES_PER_PIECE


def json_row(row: dict[str, Any], fields: Iterable[str], shape: list[int]) -> Iterator[str]:
    """``json.dumps(row_json(row, fields, shape))`` in pieces of text: x and grad are written
    a slice of about ``JSON_VALUES_PER_PIECE`` values at a time."""
    lead = "{"
    for name in fields:
        value = row.get(name)
        if name in ("x", "grad"):
            if value is None:
                continue
            yield lead + json.dumps(name) + ": "
            yield from json_array(value, shape)
        else:
            yield lead + json.dumps(name) + ": " + json.dumps(value if name == "step" else json_safe(value))
        lead = ", "
    yield "}" if lead == ", " else "{}"


def json_array(value: Any, shape: list[int]) -> Iterator[str]:
    """A flat x or grad as the JSON of ``reshape(value, shape)``, a few top-level items at a time."""
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    per_item = math.prod(shape[1:]) if len(shape) > 1 else 1
    if per_item == 0 or len(flat) == 0:
        yield json.dumps(json_safe(reshape(flat.tolist(), shape)))
        return
    items = len(flat) // per_item
    step = max(1, JSON_VALUES_PER_PIECE // per_item)
    lead = "["
    for first in range(0, items, step):
        part = flat[first * per_item:(first + step) * per_item]
        nested = reshape(part.tolist(), shape)
        if not bool(np.isfinite(part).all()):
            nested = json_safe(nested)
        yield lead + json.dumps(nested)[1:-1]
        lead = ", "
    yield "]" if lead == ", " else "[]"


def csv_header(fields: Iterable[str], numel: int) -> Iterator[str]:
    """The header line (with its newline), in pieces of text."""
    lead = ""
    for name in fields:
        if name in ("x", "grad"):
            for lo in range(0, numel, CSV_VALUES_PER_PIECE):
                yield lead + ",".join(f"{name}_{j}" for j in range(lo, min(numel, lo + CSV_VALUES_PER_PIECE)))
                lead = ","
        else:
            yield lead + name
            lead = ","
    yield "\n"


def csv_line(row: dict[str, Any], fields: Iterable[str], numel: int) -> Iterator[str]:
    """One row's CSV line (with its newline), in pieces of text: what ``csv.writer`` writes for
    ``step`` and the floats as ``repr`` (shortest round-trip), x/grad empty where not stored."""
    lead = ""
    for name in fields:
        value = row.get(name)
        if name in ("x", "grad"):
            if numel == 0:
                continue
            if value is None:
                yield lead + "," * (numel - 1)
            else:
                flat = np.asarray(value, dtype=np.float64).reshape(-1)
                for lo in range(0, len(flat), CSV_VALUES_PER_PIECE):
                    yield lead + ",".join(map(repr, flat[lo:lo + CSV_VALUES_PER_PIECE].tolist()))
                    lead = ","
        elif value is None:
            yield lead
        elif isinstance(value, float):
            yield lead + repr(value)
        else:
            yield lead + str(value)
        lead = ","
    yield "\n"


# -- Whole blocks of rows at once ---------------------------------------------------------------
#
# The same text as ``csv_line`` and ``json_row``, made a column at a time: each column's values
# become text in one pass (``repr`` over a list, the non-finite ones rewritten for JSON), and
# each row is one ``%`` of a template holding the separators, the brackets of x's shape and the
# field names. For narrow rows (a wide x keeps the row path, in bounded pieces).

_JSON_NON_FINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


def _reprs(values: np.ndarray, json_strings: bool) -> list[str]:
    """``repr`` of every float of a 1-D array (for JSON, non-finite ones as json_safe's strings)."""
    out = list(map(repr, values.tolist()))
    if json_strings:
        bad = np.flatnonzero(~np.isfinite(values))
        for i in bad.tolist():
            out[i] = _JSON_NON_FINITE[out[i]]
    return out


def _columns(batch: Any, fields: Iterable[str], numel: int, json_strings: bool) -> tuple[list[list[str]], list[str]]:
    """(columns of text, the names of the ones present); x/grad give one column per element."""
    columns: list[list[str]] = []
    present: list[str] = []
    for name in fields:
        if name == "step":
            columns.append(list(map(str, batch.steps.tolist())))
        elif name in ("f", "grad_norm", "lr"):
            columns.append(_reprs(getattr(batch, name), json_strings))
        elif name in ("x", "grad"):
            values = getattr(batch, name)
            if values is None:
                if not json_strings and numel:
                    columns.extend([[""] * len(batch)] * numel)
                    present.append(name)
                continue
            flat = _reprs(values.reshape(-1), json_strings)
            columns.extend(flat[j::numel] for j in range(numel))
        else:
            continue
        present.append(name)
    return columns, present


def _json_template(shape: list[int], numel: int) -> str:
    dims = list(shape) if len(shape) > 1 else [numel]

    def build(level: int) -> str:
        item = "%s" if level == len(dims) - 1 else build(level + 1)
        return "[" + ", ".join([item] * dims[level]) + "]"

    return build(0)


def csv_block(batch: Any, fields: list[str], numel: int) -> str:
    """The CSV lines (each with its newline) of every row of ``batch``: ``csv_line`` for each."""
    if not len(batch):
        return ""
    columns, _ = _columns(batch, fields, numel, json_strings=False)
    template = ",".join(["%s"] * len(columns)) + "\n"
    return "".join(map(template.__mod__, zip(*columns)))


def json_block(batch: Any, fields: list[str], shape: list[int], end: str, sep: str = "") -> str:
    """The JSON objects of every row of ``batch`` (``json_row`` for each), each followed by
    ``end`` and separated by ``sep``."""
    if not len(batch):
        return ""
    numel = math.prod(shape)
    columns, present = _columns(batch, fields, numel, json_strings=True)
    parts = []
    for name in present:
        value = _json_template(shape, numel) if name in ("x", "grad") else "%s"
        parts.append(json.dumps(name) + ": " + value)
    template = "{" + ", ".join(parts) + "}" + end
    return sep.join(map(template.__mod__, zip(*columns)))
