"""History reads page by bytes, not by a fixed row count: a page of a wide x holds about
``PAGE_BYTES`` of values (at least one row), on SQLite and PostgreSQL."""
from __future__ import annotations

import numpy as np
import pytest

from service.store import HistoryRows
from service.store import jobs as job_store
from service.store.history import PAGE_BYTES, iter_history, page_rows, save_chunk


def test_page_rows_follow_the_byte_budget():
    assert PAGE_BYTES == 8 * 1024 * 1024
    assert page_rows(10**6, with_x=True, with_grad=False) == 1
    assert page_rows(10**6, with_x=True, with_grad=True) == 1  # never fewer than one row
    assert page_rows(100_000, with_x=True, with_grad=False) == 10
    assert page_rows(100_000, with_x=True, with_grad=True) == 5
    assert page_rows(100_000, with_x=False, with_grad=False) == 1000  # narrow rows: the row cap
    assert page_rows(2, with_x=True, with_grad=True) == 1000
    assert page_rows(2, with_x=True, with_grad=True, rows_per_page=300) == 300


@pytest.mark.slow
def test_a_wide_history_is_read_in_pages_within_the_byte_budget(db):
    numel, n, budget = 40_000, 9, 1_000_000  # 320 kB of x a row: 3 rows a page
    job_id = job_store.create_job(db, {"objective": "x.sum()", "x0": {"shape": [numel]}, "steps": n},
                                  [numel], "cpu")[0].id
    job_store.claim_job(db, job_id, "w1", 30, 3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, numel))
    save_chunk(db, job_id, "w1", HistoryRows(steps=np.arange(n), f=np.arange(n, dtype=float), grad_norm=np.ones(n),
                                              lr=np.full(n, 0.1), x=x), None, None, 30)

    pages = list(iter_history(db, job_id, with_grad=False, numel=numel, page_bytes=budget))
    assert [len(p) for p in pages] == [3, 3, 3]
    assert all(p.x.nbytes <= budget for p in pages)
    assert np.array_equal(np.concatenate([p.x for p in pages]), x)
    # without numel, the width is read from the job
    assert [len(p) for p in iter_history(db, job_id, with_grad=False, page_bytes=budget, start=1, limit=5)] == [3, 2]
    # narrow reads (no x) of the same rows are not held to the width of x
    assert [len(p) for p in iter_history(db, job_id, with_x=False, with_grad=False, page_bytes=budget)] == [9]
    # asking for grad too (not recorded here, but a read cannot know) budgets for both columns
    assert [len(p) for p in iter_history(db, job_id, numel=numel, page_bytes=budget, limit=3)] == [1, 1, 1]
    # the default budget: a million-element row alone is 8 MB, so one row a page
    assert [len(p) for p in iter_history(db, job_id, with_grad=False, numel=10**6, limit=4)] == [1, 1, 1, 1]
    steps = [int(s) for p in iter_history(db, job_id, with_grad=False, numel=numel, page_bytes=budget, every=2) for s in p.steps]
    assert steps == [0, 2, 4, 6, 8]
