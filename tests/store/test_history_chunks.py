"""The chunk layout itself: how the store splits rows into chunks, cuts a chunk in the middle,
and what the view ``history_rows`` shows of them, on each backend."""
from __future__ import annotations

import json
import math

import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from service.rows import HistoryRows
from service.store import chunks
from service.store import jobs as job_store
from service.store.history import count_rows, iter_history, save_chunk
from tests.store.test_migration_history_chunks import same
from tests.store.test_store import new_job


def rows(first: int, n: int, width: int = 2) -> HistoryRows:
    steps = np.arange(first, first + n)
    x = np.stack([steps * 0.5, -steps / 3.0], axis=1)[:, :width]
    f = steps * 1.5
    f[steps % 7 == 0] = math.nan
    return HistoryRows(steps=steps, f=f, grad_norm=np.full(n, math.inf), lr=np.full(n, -0.0), x=x)


def stored_steps(db, job_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(v) for page in iter_history(db, job_id, numel=2) for v in page.steps]


def test_a_write_is_split_into_chunks_of_under_8_kb_of_values(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    per_chunk = chunks.rows_per_chunk(2)
    assert per_chunk == 7_600 // 44 and 28 + 8 * 2 == 44
    save_chunk(db, job_id, "w1", rows(0, 1000), None, None, 30)
    with db.session() as s:
        found = s.execute(text("SELECT first_step, last_step, n_rows, width FROM history_chunks WHERE job_id = :j "
                               "ORDER BY first_step"), {"j": job_id}).all()
    assert [tuple(r) for r in found] == [(a, min(a + per_chunk, 1000) - 1, min(per_chunk, 1000 - a), 2)
                                          for a in range(0, 1000, per_chunk)]
    assert count_rows(db, job_id) == 1000 and stored_steps(db, job_id) == list(range(1000))


def test_a_cut_inside_a_chunk_keeps_the_rows_before_it(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    save_chunk(db, job_id, "w1", rows(0, 400), None, None, 30)
    with db.session() as s:
        assert chunks.cut(s, {job_id: 250}) == 150  # 250 falls inside the second chunk
    assert stored_steps(db, job_id) == list(range(250)) and count_rows(db, job_id) == 250
    save_chunk(db, job_id, "w1", rows(250, 10), None, None, 30)
    page = next(iter_history(db, job_id, start=240, limit=20, numel=2))
    expected = rows(240, 20)
    assert page.steps.tolist() == expected.steps.tolist()
    assert page.x.tobytes() == expected.x.tobytes() and np.isnan(page.f).tolist() == np.isnan(expected.f).tolist()
    with db.session() as s:
        assert chunks.cut(s, {job_id: 1_000}) == 0 and chunks.cut(s, {job_id: 0}) == 260
    assert count_rows(db, job_id) == 0


def test_a_write_of_steps_already_stored_replaces_them_and_no_step_is_stored_twice(db):
    """Chunks of other first steps than those stored (0-4, then 3-6) overlap: the write is refused
    as the one-row-per-step key refused it, and its retry replaces from its first step."""
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    save_chunk(db, job_id, "w1", rows(0, 5), None, None, 30)
    with db.session() as s:
        try:
            chunks.write_rows(s, job_id, rows(3, 4))
        except IntegrityError:
            pass
        else:
            raise AssertionError("a write over stored steps was not refused")
    save_chunk(db, job_id, "w1", rows(3, 4), None, None, 30)  # the write path's retry replaces from step 3
    assert stored_steps(db, job_id) == list(range(7)) and count_rows(db, job_id) == 7
    page = next(iter_history(db, job_id, numel=2))
    assert page.x.tobytes() == rows(0, 7).x.tobytes()


def test_the_view_shows_one_row_per_step(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    written = rows(0, 300)
    save_chunk(db, job_id, "w1", written, None, None, 30)
    with db.session() as s:
        view = s.execute(text("SELECT step, f, grad_norm, lr, x, grad FROM history_rows WHERE job_id = :j ORDER BY step"),
                         {"j": job_id}).all()
    assert [r[0] for r in view] == list(range(300))
    if db.dialect == "postgresql":
        f, x = [r[1] for r in view], [r[4] for r in view]
        assert all(r[5] is None for r in view) and view[1][2] == math.inf and math.copysign(1, view[1][3]) == -1
    else:  # NaN is the text 'NaN', as SQLite's row-per-step table kept it; x is JSON text
        f = [float(r[1]) for r in view]
        x = [json.loads(r[4]) for r in view]
        assert view[0][1] == "NaN" and view[1][2] == math.inf and math.copysign(1, view[1][3]) == -1
    assert same(np.array(f), written.f)
    assert np.array(x).tobytes() == written.x.tobytes()
