"""A job's ``finished_at`` is the moment its end became visible, not the start of the transaction
that ended it: on PostgreSQL it is stamped after the job's last history rows are written, in the
statement that ends it (``now()`` was the transaction's start, seconds early for a big batch)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event

from service.rows import HistoryRows
from service.store import jobs as job_store
from service.store.db import as_utc
from service.status import JobStatus
from tests.store.test_store import new_job


def rows(first: int, n: int) -> HistoryRows:
    return HistoryRows(steps=list(range(first, first + n)), f=[1.0] * n, grad_norm=[1.0] * n, lr=[0.1] * n)


def test_finished_at_is_stamped_after_the_last_rows_are_written(pg_db):
    job_id = new_job(pg_db)
    assert job_store.claim_job(pg_db, job_id, "w1", 30, 3) is not None
    before_end: list[datetime] = []

    def clock_before_the_end(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE JOBS SET STATUS"):
            cursor.execute("SELECT clock_timestamp(), now()")
            before_end.extend(cursor.fetchone())

    event.listen(pg_db.engine, "before_cursor_execute", clock_before_the_end)
    try:
        job_store.finish_job(pg_db, job_id, "w1", JobStatus.SUCCEEDED, {"steps": 2000}, None, final=[rows(0, 2001)])
    finally:
        event.remove(pg_db.engine, "before_cursor_execute", clock_before_the_end)
    rows_written, transaction_start = before_end
    finished_at = job_store.get_job(pg_db, job_id).finished_at
    assert rows_written > transaction_start  # the last rows took some time inside the transaction
    assert finished_at >= as_utc(rows_written)
