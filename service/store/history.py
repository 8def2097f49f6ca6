"""Per-step histories: batched, fenced writes and streamed, keyset-paginated reads.

A chunk's rows, its checkpoint (when one is due) and the lease renewal commit in one
transaction, so after any crash the stored history reaches at least as far as the stored
checkpoint. Rows past the checkpoint are deleted when a job is claimed again
(``jobs.claim_job``) and redone by the resumed run, and a write retried after an ambiguous
commit replaces its rows (``rows.write_once``): no step is ever stored twice or skipped.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from sqlalchemy import func, select, update

from service.batch import HistoryBatch
from service.store.db import Database
from service.store.jobs import renew
from service.store.models import HistoryRow, Job
from service.store.rows import write_once, write_rows

__all__ = ["PAGE_BYTES", "HistoryBatch", "count_rows", "iter_history", "page_rows", "save_chunk", "write_rows"]


def save_chunk(db: Database, job_id: str, worker: str, batch: HistoryBatch, checkpoint: bytes | None,
               checkpoint_step: int | None, lease_seconds: float) -> bool:
    """Write a chunk, move the checkpoint and renew the lease, atomically and fenced on the
    worker holding the job. Returns whether a cancel was requested. Raises LeaseLost."""
    def transaction(s: Any, replace: bool) -> bool:
        cancel = renew(db, job_id, worker, lease_seconds, session=s)
        write_rows(s, job_id, batch, replace)
        if checkpoint is not None:
            s.execute(update(Job).where(Job.id == job_id).values(checkpoint=checkpoint, checkpoint_step=checkpoint_step))
        return cancel

    return write_once(db, transaction)


# A page of a history read holds about this many bytes of float values (x and grad rows of the
# job's size), and at least one row: a job with a million elements reads one row at a time. The
# driver's own form of a page (Python floats, array text) takes several times this while it is
# read, still bounded whatever the job's size: two exports of a million-element x measured
# about 110 MiB each over an idle API (benchmarks/export_rss.py).
PAGE_BYTES = 8 * 1024 * 1024
# Per-row bytes besides x and grad (step, f, grad_norm, lr), for the page size arithmetic.
ROW_OVERHEAD_BYTES = 64


def page_rows(numel: int, with_x: bool, with_grad: bool, batch_size: int = 1000,
              page_bytes: int = PAGE_BYTES) -> int:
    """Rows per page for a job of ``numel`` elements: ``page_bytes`` of values, 1 to ``batch_size``."""
    per_row = ROW_OVERHEAD_BYTES + 8 * max(0, numel) * (int(with_x) + int(with_grad))
    return max(1, min(batch_size, page_bytes // per_row))


def iter_history(db: Database, job_id: str, start: int = 0, limit: int | None = None, every: int = 1,
                 with_x: bool = True, with_grad: bool = True, batch_size: int = 1000,
                 numel: int | None = None, page_bytes: int = PAGE_BYTES) -> Iterator[HistoryBatch]:
    """Rows with step >= ``start`` (and step % every == 0), in step order, at most ``limit``, as
    batches each read in a short transaction, so memory stays bounded: a batch holds at most
    ``batch_size`` rows and about ``page_bytes`` of x/grad values (at least one row).
    ``numel`` is the job's element count (the width of x and grad); when not given it is read
    from the job (only if x or grad is asked for)."""
    columns = [HistoryRow.step, HistoryRow.f, HistoryRow.grad_norm, HistoryRow.lr,
               HistoryRow.x if with_x else None, HistoryRow.grad if with_grad else None]
    selected = [c for c in columns if c is not None]
    if numel is None and (with_x or with_grad):
        numel = _job_numel(db, job_id)
    page = page_rows(numel or 0, with_x, with_grad, batch_size, page_bytes)
    remaining = limit
    cursor = start
    while remaining is None or remaining > 0:
        size = page if remaining is None else min(page, remaining)
        query = select(*selected).where(HistoryRow.job_id == job_id, HistoryRow.step >= cursor)
        if every > 1:
            query = query.where(HistoryRow.step % every == 0)
        query = query.order_by(HistoryRow.step).limit(size)
        with db.session() as s:
            rows = s.execute(query).all()
        count = len(rows)
        if count:
            last = int(rows[-1][0])
            values = list(zip(*rows))
            del rows  # the columns hold the values now
            batch = HistoryBatch(steps=values[0], f=values[1], grad_norm=values[2], lr=values[3],
                                 x=_recorded(values[4]) if with_x else None,
                                 grad=_recorded(values[-1]) if with_grad else None)
            del values  # the batch holds them as float64 arrays: 8 bytes a value, not a Python float's 32
            yield batch
            del batch
        if count < size:
            return
        cursor = last + 1
        if remaining is not None:
            remaining -= count


def _job_numel(db: Database, job_id: str) -> int:
    with db.session() as s:
        shape = s.scalar(select(Job.shape).where(Job.id == job_id))
    return math.prod(shape) if shape else 0


def _recorded(column: tuple[Any, ...]) -> Any:
    """An x or grad column as rows, None when the job did not record it; a row stored without
    it (not written by this version) reads as NaNs, so one page keeps one shape."""
    present = [v for v in column if v is not None]
    if not present:
        return None
    if len(present) == len(column):
        return column
    width = len(present[0])
    return [v if v is not None else [float("nan")] * width for v in column]


def count_rows(db: Database, job_id: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(HistoryRow).where(HistoryRow.job_id == job_id)) or 0)
