"""Following ``next_start`` from 0 yields exactly every stored row, once, in order, whatever the
row's width, the job's steps, ``record.every``, the read's ``every``, ``fields`` and ``limit``:
a page that ends on the edge of an internal block (a ``limit`` that is a multiple of it) once
answered ``next_start: null`` while rows remained, and the client and CLI stopped there."""
from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from service.api import create_app
from service.api import history as history_api
from service.store import HistoryRows
from service.store import jobs as job_store
from service.store.history import save_chunk
from testkit.backends import embedded_settings
from tests.api.conftest import RecordingDispatcher


@pytest.fixture
def api(db, tmp_path):  # type: ignore[no-untyped-def]
    app = create_app(embedded_settings(tmp_path, database_url=db.url), {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    return app.test_client(), db


def stored(client: Any, db: Any, numel: int, steps: int, record_every: int) -> tuple[str, list[int]]:
    """A job of ``numel`` parameters whose history holds the rows a worker writes for ``steps``
    steps recording every ``record_every`` (and the last); (its id, the stored steps)."""
    spec = {"objective": "(x ** 2).sum()", "x0": {"shape": [numel], "init": "ones"}, "steps": steps,
            "optimizer": {"name": "sgd", "lr": 1e-6}, "record": {"every": record_every, "x": True, "grad": True}}
    resp = client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    job_id = resp.get_json()["id"]
    kept = sorted(set(range(0, steps + 1, record_every)) | {steps})
    n = len(kept)
    x = np.arange(n * numel, dtype=float).reshape(n, numel)
    assert job_store.claim_job(db, job_id, "w1", 30, 3) is not None
    save_chunk(db, job_id, "w1", HistoryRows(steps=np.array(kept), f=np.arange(n, dtype=float),
                                              grad_norm=np.ones(n), lr=np.full(n, 1e-6), x=x, grad=-x), None, None, 30)
    return job_id, kept


def follow(client: Any, job_id: str, query: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start: int | None = 0
    for _ in range(10_000):
        page = client.get(f"/v1/jobs/{job_id}/history?start={start}&{query}")
        assert page.status_code == 200, page.get_data(as_text=True)
        body = page.get_json()
        rows += body["rows"]
        start = body["next_start"]
        if start is None:
            return rows
        assert body["rows"] and start > body["rows"][-1]["step"]
    raise AssertionError("the page chain did not end")


def test_the_issue_repro_reaches_the_last_row(api):
    """196 parameters: a block is 1,000 rows, the default page is 1,000 rows."""
    client, db = api
    job_id, kept = stored(client, db, 196, 1500, 1)
    first = client.get(f"/v1/jobs/{job_id}/history").get_json()
    assert len(first["rows"]) == 1000 and first["next_start"] == 1000
    assert [r["step"] for r in follow(client, job_id, "fields=f")] == kept


@pytest.mark.parametrize("seed", range(3))
def test_following_next_start_yields_every_row_exactly_once(api, monkeypatch, seed):
    client, db = api
    # Small blocks, so that limits land on their edges often in a small history.
    monkeypatch.setattr(history_api, "BLOCK_VALUES", 60)
    monkeypatch.setattr(history_api, "BLOCK_ROWS", 9)
    rng = random.Random(seed)
    for _ in range(4):
        numel = rng.choice([1, 2, 3, 5, 11, 56])
        steps = rng.randint(0, 80)
        record_every = rng.choice([1, 1, 2, 3, 7])
        job_id, kept = stored(client, db, numel, steps, record_every)
        for _ in range(6):
            every = rng.choice([1, 1, 2, 3, 5])
            fields = rng.choice(["", "f", "x", "x,grad", "grad_norm,lr"])
            asked = fields.split(",") if fields else ["x", "grad"]
            width = numel * (("x" in asked) + ("grad" in asked))
            block = max(1, min(9, 60 // (4 + width)))
            limit = rng.choice([1, 2, block, 2 * block, 3 * block, block + 1, 1000])
            query = f"limit={limit}&every={every}" + (f"&fields={fields}" if fields else "")
            got = follow(client, job_id, query)
            want = [s for s in kept if s % every == 0]
            assert [r["step"] for r in got] == want, (numel, steps, record_every, query)
            if "x" in asked:
                index = {s: i for i, s in enumerate(kept)}
                assert all(r["x"] == [float(index[r["step"]] * numel + j) for j in range(numel)] for r in got)
