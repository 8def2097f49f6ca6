"""A finished job's big tensors (its final x and grad) in binary, out of its result.

A result whose x (or grad) holds more than ``DESCENT_INLINE_ELEMENTS`` numbers keeps, in its JSON,
only a summary of it (``summary``: shape, dtype, digest, size, norm, min, max); the values are a
``job_tensors`` row (float64, little-endian, C order), written in the transaction that ends the
job and deleted with it. So reading, listing or waiting on a job never moves megabytes, and the
values come back bit for bit (``GET /v1/jobs/ID/x``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from sqlalchemy import and_, delete, func, insert, select

from service.jsonsafe import json_safe
from service.store import chunks
from service.store.data import tensor_digest
from service.store.db import Database
from service.store.models import HistoryChunk, JobTensor

DTYPE = "float64"
SUMMARY_KEYS = frozenset({"shape", "dtype", "size", "sha256", "norm", "min", "max"})
# The tensors of a result that may be stored this way.
NAMES = ("x", "grad")


def is_summary(entry: Any) -> bool:
    """Whether a stored result's x or grad is a summary of a tensor kept in binary."""
    return isinstance(entry, dict) and entry.keys() == SUMMARY_KEYS


def as_array(values: Any) -> np.ndarray:
    """Values (nested lists, with non-finite numbers as JSON-safe strings, or an array) as a
    float64 C-order array."""
    if isinstance(values, np.ndarray):
        return np.ascontiguousarray(values, dtype="<f8")
    try:
        return np.ascontiguousarray(np.asarray(values, dtype="<f8"))
    except (TypeError, ValueError):  # "NaN", "Infinity", "-Infinity" as json_safe writes them
        return np.ascontiguousarray(np.asarray(_unsafe(values), dtype="<f8"))


def _unsafe(values: Any) -> Any:
    if isinstance(values, list):
        return [_unsafe(v) for v in values]
    return float(values)


def summary(array: np.ndarray) -> dict[str, Any]:
    """What a job document says of a tensor it does not carry: its shape, dtype, size, digest,
    Euclidean norm, min and max (JSON-safe)."""
    array = as_array(array)
    flat = array.reshape(-1)
    with np.errstate(all="ignore"):  # NaN propagates to min, max and the norm: they say so
        low, high = (float(flat.min()), float(flat.max())) if flat.size else (None, None)
        scale = float(np.abs(flat).max()) if flat.size else 0.0
        # scaled first, so the norm of finite values near the float64 limit is finite too
        norm = scale * float(np.linalg.norm(flat / scale)) if 0 < scale < np.inf else float(np.linalg.norm(flat))
    return json_safe({"shape": list(array.shape), "dtype": DTYPE, "size": int(flat.size),
                      "sha256": tensor_digest(array.shape, array.tobytes()), "norm": norm, "min": low, "max": high})


def split_result(result: dict[str, Any], arrays: Mapping[str, np.ndarray | None], inline: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The result as stored: each of ``arrays`` (x, grad) inline as nested lists when it has at
    most ``inline`` elements, else a summary, with the arrays to keep in binary."""
    stored, binary = dict(result), {}
    for name, array in arrays.items():
        if array is None:
            continue
        array = as_array(array)
        if array.size <= inline:
            stored[name] = json_safe(array.tolist())
        else:
            stored[name] = summary(array)
            binary[name] = array
    return stored, binary


def save(s: Any, job_id: str, arrays: Mapping[str, np.ndarray]) -> None:
    """In the caller's transaction (the one ending the job): keep the job's ``arrays`` in binary,
    replacing what an earlier, ambiguous commit of the same ending may have written."""
    table = JobTensor.__table__
    s.execute(delete(table).where(table.c.job_id == job_id))
    for name, array in arrays.items():  # one row at a time: each may be megabytes
        s.execute(insert(table).values(job_id=job_id, name=name, shape=list(array.shape),
                                       content=as_array(array).tobytes()))


def load(db: Database, job_id: str, name: str) -> np.ndarray | None:
    """The job's tensor ``name`` as kept in binary; None if it has none."""
    table = JobTensor.__table__
    with db.session() as s:
        row = s.execute(select(table.c.shape, table.c.content)
                        .where(table.c.job_id == job_id, table.c.name == name)).first()
    if row is None:
        return None
    return np.frombuffer(row.content, dtype="<f8").reshape(row.shape)


def load_many(db: Database, job_ids: Sequence[str], names: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
    """{(job id, name): array} of the given jobs' tensors kept in binary."""
    if not job_ids:
        return {}
    table = JobTensor.__table__
    with db.session() as s:
        rows = s.execute(select(table.c.job_id, table.c.name, table.c.shape, table.c.content)
                         .where(table.c.job_id.in_(list(job_ids)), table.c.name.in_(list(names)))).all()
    return {(r.job_id, r.name): np.frombuffer(r.content, dtype="<f8").reshape(r.shape) for r in rows}


def recorded(db: Database, job_id: str, step: int, name: str) -> np.ndarray | None:
    """The job's x or grad (``name``) as its history recorded it at ``step``, flat; None if that
    row, or that column of it, was not recorded."""
    c = HistoryChunk.__table__.c
    holder = select(func.max(c.first_step)).where(c.job_id == job_id, c.first_step <= step).scalar_subquery()
    with db.session() as s:
        found = chunks.read_chunks(s, and_(c.job_id == job_id, c.first_step == holder),
                                   with_x=name == "x", with_grad=name == "grad")
    for _, rows in found:
        at = np.nonzero(rows.steps == step)[0]
        values = getattr(rows, name)
        if len(at) and values is not None:
            return np.ascontiguousarray(values[int(at[0])], dtype="<f8")
    return None
