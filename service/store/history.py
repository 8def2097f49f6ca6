"""Per-step histories: batched, fenced writes and streamed, keyset-paginated reads.

A chunk's rows, the job's checkpoint and its lease renewal commit in one transaction, so after
any crash the stored history ends exactly where the stored checkpoint begins. Rows past the
checkpoint are deleted when a job is claimed again (``jobs.claim_job``), which is what makes a
retried chunk idempotent: no step is ever stored twice or skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from sqlalchemy import delete, insert, select, update

from service.store import pgcopy
from service.store.db import Database
from service.store.jobs import renew_lease
from service.store.models import HistoryRow, Job
from service.store.records import HistoryRecord


@dataclass(frozen=True)
class HistoryBatch:
    """Columns of consecutive recorded rows: 1-D arrays (or lists) for steps, f, grad_norm and
    lr; ``x``/``grad`` are (rows, numel) float arrays (or lists of lists), or None."""

    steps: Sequence[int]
    f: Sequence[float]
    grad_norm: Sequence[float]
    lr: Sequence[float]
    x: Any = None
    grad: Any = None

    def __len__(self) -> int:
        return len(self.steps)


def write_rows(session: Any, job_id: str, batch: HistoryBatch) -> None:
    """Insert the batch inside the caller's transaction (COPY on PostgreSQL). Rows from the
    batch's first step on are replaced, so a write retried after an ambiguous commit (the
    connection dropped during COMMIT) never duplicates a step."""
    if not len(batch):
        return
    session.execute(delete(HistoryRow).where(HistoryRow.job_id == job_id, HistoryRow.step >= int(batch.steps[0])))
    if session.bind.dialect.name == "postgresql":
        payload = pgcopy.encode(job_id, np.asarray(batch.steps), np.asarray(batch.f, dtype=np.float64),
                                np.asarray(batch.grad_norm, dtype=np.float64), np.asarray(batch.lr, dtype=np.float64),
                                None if batch.x is None else np.asarray(batch.x, dtype=np.float64),
                                None if batch.grad is None else np.asarray(batch.grad, dtype=np.float64))
        raw = session.connection().connection.driver_connection
        with raw.cursor() as cur:
            with cur.copy(f"COPY history ({pgcopy.COLUMNS}) FROM STDIN WITH (FORMAT binary)") as copy:
                copy.write(payload)
        return
    xs = _as_lists(batch.x) if batch.x is not None else [None] * len(batch)
    gs = _as_lists(batch.grad) if batch.grad is not None else [None] * len(batch)
    rows = zip(_as_lists(batch.steps), _as_lists(batch.f), _as_lists(batch.grad_norm), _as_lists(batch.lr), xs, gs)
    session.execute(insert(HistoryRow), [
        {"job_id": job_id, "step": step, "f": f, "grad_norm": gn, "lr": lr, "x": x, "grad": g}
        for step, f, gn, lr, x, g in rows
    ])


def _as_lists(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def save_chunk(db: Database, job_id: str, worker: str, batch: HistoryBatch, checkpoint: bytes | None,
               checkpoint_step: int | None, lease_seconds: float) -> bool:
    """Write a chunk, move the checkpoint and renew the lease, atomically and fenced on the
    worker holding the job. Returns whether a cancel was requested. Raises LeaseLost."""
    with db.session() as s:
        cancel = renew_lease(s, job_id, worker, lease_seconds)
        write_rows(s, job_id, batch)
        if checkpoint is not None:
            s.execute(update(Job).where(Job.id == job_id).values(checkpoint=checkpoint, checkpoint_step=checkpoint_step))
        return cancel


def iter_history(db: Database, job_id: str, start: int = 0, limit: int | None = None, every: int = 1,
                 with_x: bool = True, with_grad: bool = True, batch_size: int = 1000) -> Iterator[HistoryRecord]:
    """Rows with step >= ``start`` (and step % every == 0), in step order, at most ``limit``;
    read ``batch_size`` at a time in short transactions so memory stays bounded."""
    columns = [HistoryRow.step, HistoryRow.f, HistoryRow.grad_norm, HistoryRow.lr,
               HistoryRow.x if with_x else None, HistoryRow.grad if with_grad else None]
    selected = [c for c in columns if c is not None]
    remaining = limit
    cursor = start
    while remaining is None or remaining > 0:
        size = batch_size if remaining is None else min(batch_size, remaining)
        query = select(*selected).where(HistoryRow.job_id == job_id, HistoryRow.step >= cursor)
        if every > 1:
            query = query.where(HistoryRow.step % every == 0)
        query = query.order_by(HistoryRow.step).limit(size)
        with db.session() as s:
            rows = s.execute(query).all()
        for row in rows:
            values = dict(row._mapping)
            yield HistoryRecord(step=values["step"], f=values["f"], grad_norm=values["grad_norm"], lr=values["lr"],
                                x=values.get("x"), grad=values.get("grad"))
        if len(rows) < size:
            return
        cursor = rows[-1][0] + 1
        if remaining is not None:
            remaining -= len(rows)


def count_rows(db: Database, job_id: str) -> int:
    from sqlalchemy import func

    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(HistoryRow).where(HistoryRow.job_id == job_id)) or 0)
