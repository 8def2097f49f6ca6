"""``points``: the chosen steps are the first stored step at or after each evenly spaced target,
found by primary-key lookups of steps worked out from ``record.every`` (a gap is searched for
only between its target and the next), and every statement reads ``history`` by its index,
whatever the statistics of the moment."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, text

from service.store import history as history_store
from service.store.history import choose_steps, iter_history, iter_point_texts
from tests.store.test_history_export import stored


def reference(steps: list[int], points: int, start: int = 0, every: int = 1) -> list[int]:
    """What ``points`` means, read off every stored step."""
    kept = [s for s in steps if s >= start and s % every == 0]
    if not kept:
        return []
    lo, hi = kept[0], kept[-1]
    if points == 1 or lo == hi:
        return [hi]
    spread = [lo + (i * (hi - lo)) // (points - 1) for i in range(points)]
    targets = range(lo, hi + 1) if hi - lo + 1 <= points else spread
    return sorted({next(s for s in kept if s >= t) for t in targets})


def recorded(last: int, every: int) -> list[int]:
    """The steps a run of ``last`` steps records with ``record.every``: its multiples and the last."""
    return sorted(set(range(0, last + 1, every)) | {last})


@pytest.mark.parametrize("stride", [1, 10])
def test_chosen_steps_are_the_first_stored_at_or_after_each_target(db, stride):
    rng = np.random.default_rng(stride)
    steps = recorded(4995, stride)
    # gaps: whole stretches gone, and single rows (a history may lose rows only where record.every says so,
    # but a gap must still be found by its search, not guessed)
    gone = set(steps[100:180]) | set(rng.choice(steps[:-1], 40, replace=False).tolist())
    steps = [s for s in steps if s not in gone]
    job_id = stored(db, np.array(steps))
    for points, start, every in [(2, 0, 1), (7, 0, 1), (50, 0, 1), (1000, 0, 1), (10_000, 0, 1), (1, 0, 1),
                                 (9, 1234, 1), (13, 0, 3), (40, 17, 20), (5, 4990, 1), (3, 4996, 1)]:
        got = choose_steps(db, job_id, points, start=start, every=every, stride=stride)
        assert got == reference(steps, points, start, every), (points, start, every)


@pytest.mark.slow
def test_steps_off_the_grid_are_found_with_stride_one(db):
    """``stride`` 1 promises nothing about where rows are: any steps at all are chosen exactly."""
    rng = np.random.default_rng(3)
    steps = sorted(set(rng.integers(0, 100_000, 3000).tolist()))
    job_id = stored(db, np.array(steps))
    for points in (2, 3, 17, 500, 2999, 5000):
        assert choose_steps(db, job_id, points) == reference(steps, points), points
    assert choose_steps(db, job_id, 20, every=7) == reference(steps, 20, every=7)


def test_a_coarse_grid_chooses_each_of_its_steps_once(db):
    """record.every wider than the targets' spacing: each target's first step is a grid step or
    the last, and each is answered once."""
    steps = recorded(1003, 100)
    job_id = stored(db, np.array(steps))
    assert choose_steps(db, job_id, 50, stride=100) == steps == reference(steps, 50)
    assert choose_steps(db, job_id, 4, stride=100) == [0, 400, 700, 1003] == reference(steps, 4)


def test_a_history_that_is_gone_has_no_points(db):
    assert choose_steps(db, "no-such-job", 10, stride=5) == []
    job_id = stored(db, np.arange(0, 11))
    with db.session() as s:
        s.execute(text("DELETE FROM history_chunks WHERE job_id = :job"), {"job": job_id})
    assert choose_steps(db, job_id, 10) == []


# -- the plans on PostgreSQL -------------------------------------------------------------------

HISTORY_ROWS = 200_000


@pytest.fixture
def explained(pg_db) -> Any:  # type: ignore[no-untyped-def]
    """The plans of the SELECTs that ``pg_db`` runs on ``history``, each explained on the
    statement's own connection inside its own transaction (so its local settings apply)."""
    seen: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "history" in statement and not executemany:
            cursor.execute("EXPLAIN " + statement, parameters)
            seen.append("\n".join(row[0] for row in cursor.fetchall()))

    event.listen(pg_db.engine, "before_cursor_execute", explain)
    yield seen
    event.remove(pg_db.engine, "before_cursor_execute", explain)


def assert_by_index(plans: list[str]) -> None:
    assert plans
    for plan in plans:
        assert "Seq Scan on history" not in plan, plan
        assert "Bitmap Heap Scan on history" not in plan, plan
        assert "Index" in plan, plan


@pytest.mark.slow
@pytest.mark.parametrize("analyzed", [False, True])
def test_points_read_history_by_its_index_whatever_the_statistics(pg_db, explained, analyzed):
    """Right after a big write (no statistics of it yet: the planner guesses a handful of rows)
    and after an ANALYZE, choosing and reading the points are index lookups: a probe that walked
    the rows after each target, or a lookup of the chosen steps planned as a walk of the whole
    job with a filter, read 1,000,000 rows for 1,000 points."""
    job_id = stored(pg_db, np.array([0]))
    last = 7 * (HISTORY_ROWS - 1)  # record.every 7
    with pg_db.session() as s:
        s.execute(text(  # chunks of 170 rows, as the store writes a 2-element x
            "INSERT INTO history_chunks (job_id, first_step, last_step, n_rows, width, steps, f, grad_norm, lr, x) "
            "SELECT :job, min(g), max(g), count(*) / 2, 2, array_agg(g ORDER BY g) FILTER (WHERE o = 1), "
            "array_agg(1.0::float8) FILTER (WHERE o = 1), array_agg(1.0::float8) FILTER (WHERE o = 1), "
            "array_agg(0.1::float8) FILTER (WHERE o = 1), array_agg(e ORDER BY g, o) "
            "FROM generate_series(7, :last, 7) AS g CROSS JOIN LATERAL unnest(ARRAY[g * 0.5, -g / 3.0]) "
            "WITH ORDINALITY AS u(e, o) GROUP BY (g / 7 - 1) / 170"), {"job": job_id, "last": last})
    if analyzed:
        with pg_db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE history_chunks"))
    explained.clear()
    steps = choose_steps(pg_db, job_id, 1000, stride=7)
    every_row = list(range(0, last + 1, 7))
    assert steps == reference(every_row, 1000) and len(steps) == 1000 and steps[-1] == last
    # without the job's stride nearly every target misses a row: each is searched for up to the next
    assert choose_steps(pg_db, job_id, 1000) == steps
    assert choose_steps(pg_db, job_id, 1000, every=2, stride=7) == reference(every_row, 1000, every=2)
    for stride, rows_per_page in ((7, 1000), (1, 1000), (7, 300)):  # gaps searched for; pages after the first
        pages = list(iter_point_texts(pg_db, job_id, 1000, ["step", "f", "x"], 2, stride=stride, rows_per_page=rows_per_page))
        assert [row[0] for page in pages for row in page] == steps, (stride, rows_per_page)
    assert_by_index(explained)
    # the binary read of chosen steps (the wide rows' path) goes past SQLAlchemy's events: its statement, explained
    with pg_db.session() as s:
        plan = s.connection().exec_driver_sql("EXPLAIN " + history_store._pg_at(["step", "f", "x"]),
                                              {"job": job_id, "steps": steps}).scalars().all()
    assert_by_index(["\n".join(plan)])
    rows = [int(v) for batch in iter_history(pg_db, job_id, steps=steps, numel=2) for v in batch.steps]
    assert rows == steps


def test_texts_of_chosen_steps_are_pages_of_the_rows_in_step_order(pg_db):
    job_id = stored(pg_db, np.arange(0, 50), numel=3)
    pages = list(iter_point_texts(pg_db, job_id, 5, ["step", "lr", "x"], 3, sep="; ", rows_per_page=2))
    assert [[row[0] for row in page] for page in pages] == [[0, 12], [24, 36], [49]]
    step, lr, x = pages[0][1]
    assert (step, lr) == (12, "0.1") and x.count("; ") == 2 and "{" not in x
    assert [len(p) for p in iter_point_texts(pg_db, job_id, 4, ["step"], 3, start=40, every=3, rows_per_page=3)] == [3]
    assert list(iter_point_texts(pg_db, job_id, 5, ["step", "f"], 3, start=50)) == []
