"""Job tensors: a finished job's big x and grad in binary, out of its result's JSON

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 18:00:00

A result held its final x (and grad) as nested JSON lists: 18 MB of text for a million-element x,
read and parsed by every GET of the job, list page, ?wait and event stream. ``job_tensors`` keeps
an x or grad of more than 10,000 elements (the default ``DESCENT_INLINE_ELEMENTS``) as float64
bytes, and the result keeps a summary of it (``service.store.tensors``). Existing results with
such an x or grad are moved, one job at a time; the downgrade puts the values back as lists.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

INLINE = 10_000
_SUMMARY = {"shape", "dtype", "size", "sha256", "norm", "min", "max"}


def _safe(v: float) -> Any:
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _safe_values(values: Any) -> Any:
    return [_safe_values(v) for v in values] if isinstance(values, list) else _safe(values)


def _array(values: Any) -> np.ndarray:
    def unsafe(v: Any) -> Any:
        return [unsafe(i) for i in v] if isinstance(v, list) else float(v)
    return np.ascontiguousarray(np.asarray(unsafe(values), dtype="<f8"))


def _summary(a: np.ndarray) -> dict[str, Any]:
    flat = a.reshape(-1)
    raw = a.tobytes()
    with np.errstate(all="ignore"):
        return {"shape": list(a.shape), "dtype": "float64", "size": int(flat.size),
                "sha256": hashlib.sha256(json.dumps(list(a.shape)).encode() + b"\n" + raw).hexdigest(),
                "norm": _safe(float(np.linalg.norm(flat))),
                "min": _safe(float(flat.min())) if flat.size else None,
                "max": _safe(float(flat.max())) if flat.size else None}


def _jobs(conn: Any) -> sa.Table:
    return sa.table("jobs", sa.column("id", sa.String()), sa.column("status", sa.String()),
                    sa.column("shape", sa.JSON()), sa.column("result", sa.JSON()))


def _tensors() -> sa.Table:
    return sa.table("job_tensors", sa.column("job_id", sa.String()), sa.column("name", sa.String()),
                    sa.column("shape", sa.JSON()), sa.column("content", sa.LargeBinary()))


def upgrade() -> None:
    op.create_table(
        "job_tensors",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_job_tensors"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE", name="fk_job_tensors_job"),
    )
    conn = op.get_bind()
    jobs, tensors = _jobs(conn), _tensors()
    # only a job whose x has more than INLINE elements can have a big x or grad: its shape says so
    shapes = conn.execute(sa.select(jobs.c.id, jobs.c.shape).where(jobs.c.status.in_(("succeeded", "failed", "cancelled")))).all()
    ids = [job_id for job_id, shape in shapes if isinstance(shape, list) and math.prod(shape) > INLINE]
    for job_id in ids:  # one result at a time: each may be megabytes
        result = conn.execute(sa.select(jobs.c.result).where(jobs.c.id == job_id)).scalar()
        if not isinstance(result, dict):
            continue
        moved = False
        for name in ("x", "grad"):
            values = result.get(name)
            if not isinstance(values, list):
                continue
            array = _array(values)
            if array.size <= INLINE:
                continue
            conn.execute(sa.insert(tensors).values(job_id=job_id, name=name, shape=list(array.shape),
                                                   content=array.tobytes()))
            result[name] = _summary(array)
            moved = True
        if moved:
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(result=result))


def downgrade() -> None:
    conn = op.get_bind()
    jobs, tensors = _jobs(conn), _tensors()
    rows = conn.execute(sa.select(tensors.c.job_id, tensors.c.name)).all()
    for job_id, name in rows:
        shape, content = conn.execute(sa.select(tensors.c.shape, tensors.c.content)
                                      .where(tensors.c.job_id == job_id, tensors.c.name == name)).one()
        result = conn.execute(sa.select(jobs.c.result).where(jobs.c.id == job_id)).scalar()
        if isinstance(result, dict) and isinstance(result.get(name), dict) and result[name].keys() == _SUMMARY:
            values = np.frombuffer(content, dtype="<f8").reshape(shape).tolist()
            result[name] = _safe_values(values)
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(result=result))
    op.drop_table("job_tensors")
