"""Writing history rows: COPY (binary) on PostgreSQL, a bulk INSERT elsewhere.

A first write is a plain insert. Only a write retried after an ambiguous commit (the connection
dropped during COMMIT, so the rows may already be there) replaces rows from its first step on;
``write_once`` does that retry when the plain insert meets a duplicate key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import psycopg
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from service.store import pgcopy
from service.store.db import Database
from service.store.models import HistoryRow

T = TypeVar("T")


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


def write_rows(session: Any, job_id: str, batch: HistoryBatch, replace: bool = False) -> None:
    """Insert the batch inside the caller's transaction; with ``replace``, first delete the
    job's rows from the batch's first step on."""
    if not len(batch):
        return
    if replace:
        session.execute(delete(HistoryRow).where(HistoryRow.job_id == job_id, HistoryRow.step >= int(batch.steps[0])))
    if session.bind.dialect.name == "postgresql":
        payload = pgcopy.encode(job_id, np.asarray(batch.steps), np.asarray(batch.f, dtype=np.float64),
                                np.asarray(batch.grad_norm, dtype=np.float64), np.asarray(batch.lr, dtype=np.float64),
                                None if batch.x is None else np.asarray(batch.x, dtype=np.float64),
                                None if batch.grad is None else np.asarray(batch.grad, dtype=np.float64))
        statement = f"COPY history ({pgcopy.COLUMNS}) FROM STDIN WITH (FORMAT binary)"
        raw = session.connection().connection.driver_connection
        try:
            with raw.cursor() as cur:
                with cur.copy(statement) as copy:
                    copy.write(payload)
        except psycopg.IntegrityError as exc:  # the driver's own errors: map them as SQLAlchemy would
            raise IntegrityError(statement, None, exc) from exc
        except psycopg.OperationalError as exc:
            raise OperationalError(statement, None, exc) from exc
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




def write_once(db: Database, transaction: Callable[[Any, bool], T]) -> T:
    """Run ``transaction(session, replace)`` in a session: first with replace False, and again
    with replace True if its rows met ones already stored by an earlier, ambiguous commit."""
    try:
        with db.session() as s:
            return transaction(s, False)
    except IntegrityError:
        with db.session() as s:
            return transaction(s, True)
