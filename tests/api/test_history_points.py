"""``points=N``: at most N rows spread evenly over the steps, always with the first and the last,
in every format and with ``fields``, ``start``, ``every`` and ``limit``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from service.api import create_app
from service.store import HistoryBatch
from testkit.backends import embedded_settings
from tests.api.test_history_reads import SPEC, stored_job

FORMATS = ["json", "csv", "ndjson"]


@pytest.fixture
def api(db, tmp_path):  # type: ignore[no-untyped-def]
    """(client, database) of an API on each backend."""
    app = create_app(embedded_settings(tmp_path, database_url=db.url), {"TESTING": True}, db=db)
    return app.test_client(), db


def history(client, db, steps: np.ndarray, spec=SPEC) -> str:  # type: ignore[no-untyped-def]
    n = len(steps)
    x = np.stack([steps * 0.5, -steps / 3.0], axis=1)
    return stored_job(client, db, spec, HistoryBatch(steps=steps, f=np.linspace(640, 1, n), grad_norm=np.full(n, 2.0),
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
