"""Exports at the database's speed: PostgreSQL writes Python's ``repr`` of every double, blocks of
text stay bounded and keep step order, and ``points`` picks its steps from the index."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from service.store import HistoryRows
from service.store import history as history_store
from service.store import jobs as job_store
from service.store.history import choose_steps, iter_history, iter_text, save_chunk
from service.store.pgcopy import repr_sql, unmark


def odd_doubles() -> list[float]:
    rng = np.random.default_rng(7)
    values = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 640.0, 1e14, 1e15, -1e15, 1e16, 1e17, 1e22, 1e23,
              9999999999999998.0, 999999999999999.9, 1234567890123456.8, 4503599627370495.5, 9007199254740993.0,
              123456789012345.6, 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 1e-4, 1e-5, 1.5e-7, 2.5e-5, 0.0001234, 5e-324,
              2.2250738585072014e-308, 1.7976931348623157e308, 1e300, 1e-300, 100.5, 1e15 + 0.5, 3.0e-5]
    values += [-v for v in values]
    # random bit patterns: every exponent, every mantissa
    bits = rng.integers(0, 2**63, 100_000, dtype=np.int64)
    values += [v for v in (struct.unpack("<d", struct.pack("<q", int(b)))[0] for b in bits) if math.isfinite(v)]
    # every decade from 1e-20 to 1e20, some integral
    values += (10.0 ** rng.uniform(-20, 20, 30_000)).tolist() + np.round(10.0 ** rng.uniform(0, 23, 30_000)).tolist()
    return values


@pytest.mark.slow
@pytest.mark.parametrize("json_strings", [False, True])
def test_postgresql_writes_pythons_repr_of_every_double(pg_db, json_strings):
    values = odd_doubles()
    expression = repr_sql("v", "t", json_strings)
    with pg_db.session() as s:
        conn = s.connection()
        conn.exec_driver_sql("SET LOCAL extra_float_digits = 1")
        got = conn.exec_driver_sql(f"SELECT {expression} FROM (SELECT v, v::text AS t, n FROM unnest(%(v)s::float8[]) "
                                   "WITH ORDINALITY AS u(v, n)) AS q ORDER BY n", {"v": values}).scalars().all()
    got = [unmark(g) for g in got]
    special = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}
    expected = [(special.get(repr(v), repr(v)) if json_strings else repr(v)) for v in values]
    wrong = [(v, g, e) for v, g, e in zip(values, got, expected) if g != e]
    assert not wrong, wrong[:10]


def stored(db, steps: np.ndarray, numel: int = 2) -> str:  # type: ignore[no-untyped-def]
    job_id = job_store.create_job(db, {"objective": "x.sum()", "x0": [1.0] * numel, "steps": int(steps[-1])},
                                  [numel], "cpu")[0].id
    job_store.claim_job(db, job_id, "w1", 30, 3)
    n = len(steps)
    rng = np.random.default_rng(0)
    save_chunk(db, job_id, "w1", HistoryRows(steps=steps, f=rng.standard_normal(n), grad_norm=np.ones(n),
                                              lr=np.full(n, 0.1), x=rng.standard_normal((n, numel))), None, None, 30)
    return job_id


def test_points_are_chosen_from_the_steps(db):
    job_id = stored(db, np.arange(0, 1001))
    assert choose_steps(db, job_id, 5) == [0, 250, 500, 750, 1000]
    assert choose_steps(db, job_id, 2) == [0, 1000]
    assert choose_steps(db, job_id, 1) == [1000]
    assert choose_steps(db, job_id, 4, start=10) == [10, 340, 670, 1000]
    assert choose_steps(db, job_id, 5000) == list(range(1001))
    assert choose_steps(db, job_id, 3, start=1000) == [1000]
    assert choose_steps(db, job_id, 3, start=1001) == []
    sparse = stored(db, np.array([0, 10, 20, 30, 995]))
    assert choose_steps(db, sparse, 3) == [0, 995]  # targets 0, 497, 995: 497 finds 995
    assert choose_steps(db, sparse, 100) == [0, 10, 20, 30, 995]
    assert choose_steps(db, "no-such-job", 10) == []


def test_history_reads_of_chosen_steps(db):
    job_id = stored(db, np.arange(0, 50))
    pages = list(iter_history(db, job_id, steps=[0, 3, 4, 17, 49, 60], rows_per_page=2, numel=2))
    assert [p.steps.tolist() for p in pages] == [[0, 3], [4, 17], [49]]
    assert [int(s) for p in iter_history(db, job_id, steps=[0, 3, 4, 17, 49], start=4, every=2, numel=2) for s in p.steps] == [4]
    assert [int(s) for p in iter_history(db, job_id, steps=[1, 2, 3], limit=2, numel=2) for s in p.steps] == [1, 2]


@pytest.mark.parametrize("ahead", [0, 2])
def test_text_blocks_are_bounded_and_in_step_order(pg_db, monkeypatch, ahead):
    steps = np.concatenate([np.arange(0, 3000, 7), [3001]])
    job_id = stored(pg_db, steps, numel=3)
    fields = ["step", "f", "grad_norm", "lr", "x"]
    whole = "".join(iter_text(pg_db, job_id, "csv", fields, [3], ahead=ahead))
    assert [int(line.split(",")[0]) for line in whole.splitlines()] == steps.tolist()
    monkeypatch.setattr(history_store, "TEXT_BLOCK_CHARS", 24 * 7 * 50)  # 50 rows a block
    # stride 70 promises ten times fewer rows than there are: full blocks are read to their end
    for kwargs in ({}, {"stride": 7}, {"stride": 70}, {"start": 100, "limit": 120}, {"stride": 70, "limit": 300},
                   {"every": 2}):
        blocks = list(iter_text(pg_db, job_id, "ndjson", fields, [3], ahead=ahead, **kwargs))
        assert all(0 < block.count("\n") <= 50 for block in blocks), kwargs
        got = [int(line.split(",")[0][len('{"step": '):]) for block in blocks for line in block.splitlines()]
        expected = [s for s in steps.tolist() if s >= kwargs.get("start", 0) and s % kwargs.get("every", 1) == 0]
        assert got == expected[:kwargs.get("limit")], kwargs


@pytest.mark.slow
def test_reads_give_back_every_double_exactly(db):
    """The reads decode a page's values a column at a time (SQLite: its JSON text in one parse):
    every double comes back bit for bit (a NaN as a NaN), infinities and -0.0 included, in pages
    of any size."""
    values = np.array(odd_doubles()[:30_000])
    numel, n = 3, 10_000
    x = values.reshape(n, numel)
    job_id = job_store.create_job(db, {"objective": "x.sum()", "x0": [1.0] * numel, "steps": n - 1}, [numel], "cpu")[0].id
    job_store.claim_job(db, job_id, "w1", 30, 3)
    f = np.roll(values[:n], 1)
    save_chunk(db, job_id, "w1", HistoryRows(steps=np.arange(n), f=f, grad_norm=values[n:2 * n], lr=values[-n:],
                                              x=x, grad=-x), None, None, 30)
    for rows_per_page in (1000, 7000):
        pages = list(iter_history(db, job_id, numel=numel, rows_per_page=rows_per_page))
        for name, expected in (("x", x), ("grad", -x), ("f", f), ("grad_norm", values[n:2 * n]), ("lr", values[-n:])):
            got = np.concatenate([getattr(p, name) for p in pages])
            expected = np.where(np.isnan(expected), np.nan, expected)  # a NaN's sign is not kept
            assert np.isnan(got).tolist() == np.isnan(expected).tolist(), name
            assert got.view(np.int64)[~np.isnan(got)].tolist() == expected.view(np.int64)[~np.isnan(expected)].tolist(), name
