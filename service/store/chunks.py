"""Writing history rows: COPY (binary) on PostgreSQL, a bulk INSERT elsewhere.

A first write is a plain insert. Only a write retried after an ambiguous commit (the connection
dropped during COMMIT, so the rows may already be there) replaces rows from its first step on;
``write_once`` does that retry when the plain insert meets a duplicate key.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import psycopg
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from service.rows import HistoryRows
from service.store import pgcopy
from service.store.db import Database
from service.store.models import HistoryRow

T = TypeVar("T")


def write_rows(session: Any, job_id: str, batch: HistoryRows, replace: bool = False) -> None:
    """Insert the batch inside the caller's transaction; with ``replace``, first delete the
    job's rows from the batch's first step on."""
    write_many(session, [(job_id, batch)], replace)


def write_many(session: Any, items: Sequence[tuple[str, HistoryRows]], replace: bool = False) -> None:
    """``write_rows`` for the batches of many jobs (one COPY on PostgreSQL)."""
    items = [(job_id, batch) for job_id, batch in items if len(batch)]
    if not items:
        return
    if replace:
        for job_id, batch in items:
            session.execute(delete(HistoryRow).where(HistoryRow.job_id == job_id,
                                                     HistoryRow.step >= int(batch.steps[0])))
    if session.bind.dialect.name == "postgresql":
        payload = pgcopy.encode_many(items)
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
    session.execute(insert(HistoryRow), [
        {"job_id": job_id, "x": None, "grad": None, **row} for job_id, batch in items for row in batch.as_dicts()
    ])


def write_once(db: Database, transaction: Callable[[Any, bool], T]) -> T:
    """Run ``transaction(session, replace)`` in a session: first with replace False, and again
    with replace True if its rows met ones already stored by an earlier, ambiguous commit."""
    try:
        with db.session() as s:
            return transaction(s, False)
    except IntegrityError:
        with db.session() as s:
            return transaction(s, True)
