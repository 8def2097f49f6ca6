"""The hot paths' plans do not depend on the statistics of the moment: after ANALYZE of a
``history_chunks`` that holds one big job (as autovacuum runs it after a big first write), writing
a chunk and ending a batch of small jobs, with the worker's check that its last written step is
stored (``believing``), read chunks by an index, never by a sequential scan per job (which took
minutes instead of milliseconds for a 10,000-job sweep)."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from service.rows import HistoryRows
from service.store import jobs as job_store
from service.store.history import save_chunk
from service.status import JobStatus
from tests.store.test_store import new_job


def rows(first: int, n: int) -> HistoryRows:
    return HistoryRows(steps=list(range(first, first + n)), f=[1.0] * n, grad_norm=[1.0] * n, lr=[0.1] * n)


@pytest.fixture
def plans(pg_db) -> Any:  # type: ignore[no-untyped-def]
    """The plans of the UPDATEs of ``jobs`` and the SELECTs of ``history_chunks`` that ``pg_db``
    runs, each explained on the statement's own connection inside its own transaction (so its
    session and local settings apply)."""
    seen: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        head = statement.lstrip().upper()
        reads = head.startswith("SELECT") and "HISTORY_CHUNKS" in head
        if (head.startswith("UPDATE JOBS") or reads) and not executemany:
            cursor.execute("EXPLAIN " + statement, parameters)
            seen.append("\n".join(row[0] for row in cursor.fetchall()))

    event.listen(pg_db.engine, "before_cursor_execute", explain)
    yield seen
    event.remove(pg_db.engine, "before_cursor_execute", explain)


def test_ending_a_batch_after_a_skewed_analyze_reads_history_by_its_index(pg_db, plans):
    big = new_job(pg_db)
    assert job_store.claim_job(pg_db, big, "w0", 30, 3) is not None
    with pg_db.session() as s:
        s.execute(text("INSERT INTO history_chunks (job_id, first_step, last_step, n_rows, width, steps, f, grad_norm, lr) "
                       "SELECT :job, g, g, 1, 0, ARRAY[g], '{1.0}', '{1.0}', '{0.1}' FROM generate_series(0, 99999) AS g"),
                  {"job": big})
    with pg_db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE history_chunks"))
    small = [new_job(pg_db) for _ in range(20)]
    for job_id in small:
        assert job_store.claim_job(pg_db, job_id, "w1", 30, 3) is not None
        save_chunk(pg_db, job_id, "w1", rows(0, 4), None, None, 30)
    plans.clear()
    written = {job_id: job_store.Written(last_step=3) for job_id in small}
    with job_store.believing(written) as behind:
        for job_id in small:
            save_chunk(pg_db, job_id, "w1", rows(4, 1), None, None, 30)
            written[job_id] = job_store.Written(last_step=4)
        ended = job_store.finish_jobs(pg_db, "w1", [job_store.Ending(j, JobStatus.SUCCEEDED, {"steps": 6}, None,
                                                                      (rows(5, 1),)) for j in small])
    assert ended == set(small) and not behind
    plans.clear()
    with job_store.believing({big: job_store.Written(last_step=99_999)}) as behind:  # the big job's own renewal
        assert job_store.renew(pg_db, big, "w0", 30) is False
    assert not behind
    reading = [p for p in plans if "history" in p]
    assert reading, plans
    for plan in reading:  # by an index, and by last_step within it, never every chunk of a job
        assert "Seq Scan on history_chunks" not in plan, plan
        assert not any("Filter:" in line and "last_step" in line for line in plan.splitlines()), plan
    with pg_db.session() as s:
        reserved = s.execute(text("SELECT DISTINCT reserved_values FROM jobs WHERE id = ANY(:ids)"),
                             {"ids": small}).scalars().all()
    assert reserved == [6 * 5]  # six rows of step, f, grad_norm, lr and x's two values
