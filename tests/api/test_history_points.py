"""``points=N``: at most N rows spread evenly over the steps, always with the first and the last,
in every format and with ``fields``, ``start``, ``every`` and ``limit``, written as the ordinary
read writes the same rows, byte for byte."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from service.api import create_app
from service.api import history as history_api
from service.store import HistoryRows, StoreUnavailable
from service.store import jobs as job_store
from service.store.history import save_chunk
from testkit.backends import embedded_settings
from tests.api.test_history_reads import SPEC, stored_job, submit
from tests.store.test_history_export import odd_doubles
from tests.api.conftest import RecordingDispatcher

FORMATS = ["json", "csv", "ndjson"]


@pytest.fixture
def api(db, tmp_path):  # type: ignore[no-untyped-def]
    """(client, database) of an API on each backend."""
    app = create_app(embedded_settings(tmp_path, database_url=db.url), {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    return app.test_client(), db


def history(client, db, steps: np.ndarray, spec=SPEC) -> str:  # type: ignore[no-untyped-def]
    n = len(steps)
    x = np.stack([steps * 0.5, -steps / 3.0], axis=1)
    return stored_job(client, db, spec, HistoryRows(steps=steps, f=np.linspace(640, 1, n), grad_norm=np.full(n, 2.0),
                                                     lr=np.full(n, 1e-3), x=x, grad=x * 20))


def steps_of(resp, fmt: str) -> list[int]:  # type: ignore[no-untyped-def]
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    text = resp.get_data(as_text=True)
    if fmt == "json":
        body = json.loads(text)
        assert body["next_start"] is None
        return [r["step"] for r in body["rows"]]
    if fmt == "csv":
        return [int(line.split(",")[0]) for line in text.splitlines()[1:]]
    return [json.loads(line)["step"] for line in text.splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_points_spread_evenly_with_the_first_and_the_last(api, fmt):
    client, db = api
    job_id = history(client, db, np.arange(1001))
    for n in (2, 3, 10, 101, 1000):
        got = steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points={n}"), fmt)
        assert got[0] == 0 and got[-1] == 1000 and len(got) <= n, (n, got[:5])
        assert got == sorted(set(got))
        assert len(got) == n  # dense steps: every target is a step of its own
        gaps = np.diff(got)
        assert gaps.max() - gaps.min() <= 1, (n, gaps.min(), gaps.max())  # evenly spread
    everything = steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=100000"), fmt)
    assert everything == list(range(1001))
    assert steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=1"), fmt) == [1000]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_points_on_sparse_steps_with_start_and_fields(api, fmt):
    client, db = api
    steps = np.concatenate([np.arange(0, 5000, 10), [4995]])  # record.every 10 and the last step
    job_id = history(client, db, steps, {**SPEC, "steps": 4995, "record": {"every": 10, "grad": True}})
    got = steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=50"), fmt)
    assert got[0] == 0 and got[-1] == 4995 and len(got) <= 50 and set(got) <= set(steps.tolist())
    assert len(got) >= 45
    got = steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=7&start=1001"), fmt)
    assert got[0] == 1010 and got[-1] == 4995 and len(got) <= 7
    # the rows are the stored rows, and fields choose their columns
    resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=3&fields=x")
    text = resp.get_data(as_text=True)
    if fmt == "csv":
        assert text.splitlines() == ["step,x_0,x_1", "0,0.0,0.0", f"2500,1250.0,{-2500 / 3.0!r}", f"4995,2497.5,{-4995 / 3.0!r}"]
    else:
        rows = json.loads(text)["rows"] if fmt == "json" else [json.loads(line) for line in text.splitlines()]
        assert rows == [{"step": s, "x": [s * 0.5, -s / 3.0]} for s in (0, 2500, 4995)]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_points_of_an_empty_or_one_row_history(api, fmt):
    client, db = api
    job_id = history(client, db, np.arange(1))
    assert steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=10"), fmt) == [0]
    assert steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=10&start=5"), fmt) == []


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_points_are_a_400_naming_points(api, fmt):
    client, db = api
    job_id = history(client, db, np.arange(5))
    for query in ("points=0", "points=100001", "points=abc", "points=-1", "points=1e3"):
        resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&{query}")
        assert resp.status_code == 400, query
        error = resp.get_json()["error"]
        assert error["field"] == "points" and error["code"] == "invalid_parameter", (query, error)
    assert client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=100000").status_code == 200


def test_points_choose_from_the_index(api):
    """Spread over steps, not rows: the targets' first stored steps at or after them."""
    client, db = api
    steps = np.array([0, 1, 2, 3, 500, 998, 999, 1000])
    job_id = history(client, db, steps, {**SPEC, "steps": 1000})
    got = steps_of(client.get(f"/v1/jobs/{job_id}/history?points=5"), "json")
    assert got == [0, 500, 998, 1000]  # targets 0, 250, 500, 750, 1000


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_points_are_chosen_among_multiples_of_every_and_at_most_limit(api, fmt):
    client, db = api
    job_id = history(client, db, np.arange(101))
    chosen = steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=6&every=10"), fmt)
    assert chosen == [0, 20, 40, 60, 80, 100]
    capped = steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=50&limit=3"), fmt)
    assert capped == [0, 50, 100]
    assert steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=1&every=1&limit=1"), fmt) == [100]


def odd_history(n: int, numel: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``numel`` values drawn from doubles whose text is hard to get right: NaN,
    infinities, -0.0, integral values, 1e15 to 1e23, the smallest and largest, and random bits."""
    pool = np.array(odd_doubles()[:5000] + [1e15, 1e16, 2.0**53, 123.0, 640.0, 1e-5, 3e-5])
    return rng.choice(pool, size=(n, numel))


def plain(client, job_id: str, fmt: str, query: str = "") -> str:  # type: ignore[no-untyped-def]
    """Every row by the ordinary read (one JSON page, or a whole CSV/NDJSON export)."""
    resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&limit=100000{query}")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    return resp.get_data(as_text=True)


@pytest.mark.slow
@pytest.mark.parametrize("x0", [[1.0, 2.0, 3.0], [[1.0, 2.0], [3.0, 4.0]], [[[1.0, 2.0]], [[3.0, 4.0]]]],
                         ids=["vector", "matrix", "3-d"])
def test_points_write_the_same_bytes_as_the_ordinary_read(api, x0):
    """All the rows by ``points`` (on PostgreSQL from the database's text of the values) are
    the bytes of the ordinary read of them, in every format, odd values included."""
    client, db = api
    numel, n = int(np.size(x0)), 300
    rng = np.random.default_rng(numel)
    x, grad = odd_history(n, numel, rng), odd_history(n, numel, rng)
    scalars = odd_history(n, 3, rng)
    spec = {**SPEC, "x0": x0, "steps": n - 1}
    job_id = stored_job(client, db, spec, HistoryRows(steps=np.arange(n), f=scalars[:, 0], grad_norm=scalars[:, 1],
                                                       lr=scalars[:, 2], x=x, grad=grad))
    for fmt in FORMATS:
        for query in ("", "&fields=x", "&fields=f,lr", "&every=3&start=10"):
            got = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=100000{query}").get_data(as_text=True)
            assert got == plain(client, job_id, fmt, query), (fmt, query)


@pytest.mark.slow
def test_points_of_rows_without_x_are_written_as_the_ordinary_read_writes_them(api):
    client, db = api
    unrecorded = history(client, db, np.arange(20), {**SPEC, "record": {"x": False}})
    for fmt in FORMATS:
        for query in ("", "&fields=x", "&fields=x,f"):
            got = client.get(f"/v1/jobs/{unrecorded}/history?format={fmt}&points=100000{query}").get_data(as_text=True)
            assert got == plain(client, unrecorded, fmt, query), (fmt, query)
    # rows stored without x beside rows with it (not written by this version): NaNs in a JSON page
    job_id = submit(client, {**SPEC, "steps": 9})
    assert job_store.claim_job(db, job_id, "w1", 30, 3) is not None
    x = np.arange(10.0).reshape(5, 2)
    save_chunk(db, job_id, "w1", HistoryRows(steps=np.arange(5), f=np.ones(5), grad_norm=np.ones(5), lr=np.ones(5),
                                              x=x, grad=x), None, None, 30)
    save_chunk(db, job_id, "w1", HistoryRows(steps=np.arange(5, 10), f=np.ones(5), grad_norm=np.ones(5),
                                              lr=np.ones(5)), None, None, 30)
    got = client.get(f"/v1/jobs/{job_id}/history?points=100000").get_data(as_text=True)
    assert got == plain(client, job_id, "json")
    assert json.loads(got)["rows"][7]["x"] == ["NaN", "NaN"]


def test_points_of_a_dropped_history_are_no_rows(api):
    client, db = api
    job_id = history(client, db, np.arange(5))
    with db.session() as s:
        s.execute(text("DELETE FROM history_chunks WHERE job_id = :job"), {"job": job_id})
    for fmt in FORMATS:
        assert steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=10"), fmt) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_database_failure_before_the_first_point_is_an_error_status(api, fmt, monkeypatch):
    client, db = api
    job_id = history(client, db, np.arange(5))

    def unavailable(*args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("the database is unavailable: test")
        yield  # a generator, as the real ones: it fails on its first page

    monkeypatch.setattr(history_api, "iter_point_texts", unavailable)  # PostgreSQL
    monkeypatch.setattr(history_api, "iter_history", unavailable)  # SQLite
    resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=3")
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "database_unavailable"


@pytest.mark.slow
def test_points_of_wide_rows_write_the_same_bytes_as_the_ordinary_read(api, monkeypatch):
    """Rows wider than a block go row by row (on PostgreSQL read in binary, a lookup each)."""
    client, db = api
    monkeypatch.setattr(history_api, "BLOCK_MAX_WIDTH", 2)
    n, rng = 40, np.random.default_rng(1)
    x, scalars = odd_history(n, 3, rng), odd_history(n, 3, rng)
    job_id = stored_job(client, db, {**SPEC, "x0": [1.0, 2.0, 3.0], "steps": n - 1},
                        HistoryRows(steps=np.arange(n), f=scalars[:, 0], grad_norm=scalars[:, 1], lr=scalars[:, 2],
                                     x=x, grad=-x))
    for fmt in FORMATS:
        got = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=100000&every=2").get_data(as_text=True)
        assert got == plain(client, job_id, fmt, "&every=2"), fmt
        assert steps_of(client.get(f"/v1/jobs/{job_id}/history?format={fmt}&points=3"), fmt) == [0, 19, 39]
