"""History reads through the API, on SQLite and PostgreSQL: every query parameter is bounded
and refused with a 400 before the streamed body starts, an early database failure is an error
status (never a 200 that breaks off), and a wide history leaves in bounded pieces."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import numpy as np
import pytest

from service.api import create_app
from service.api import history as history_api
from service.api.serialize import CSV_VALUES_PER_PIECE, json_row, row_json
from service.store import HistoryRows, StoreUnavailable
from service.store import jobs as job_store
from service.store.history import save_chunk
from testkit.backends import embedded_settings
from tests.api.conftest import RecordingDispatcher

SPEC = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 20, "optimizer": {"name": "sgd", "lr": 0.001},
        "record": {"grad": True}}
FORMATS = ["json", "csv", "ndjson"]


@pytest.fixture
def api(db, tmp_path):  # type: ignore[no-untyped-def]
    """(client, database) of an API on each backend."""
    settings = embedded_settings(tmp_path, database_url=db.url)
    app = create_app(settings, {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    return app.test_client(), db


def submit(client: Any, spec: dict[str, Any]) -> str:
    resp = client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp.get_json()["id"]


def stored_job(client: Any, db: Any, spec: dict[str, Any], batch: HistoryRows) -> str:
    """A job whose history is ``batch``, written as a worker writes it."""
    job_id = submit(client, spec)
    assert job_store.claim_job(db, job_id, "w1", 30, 3) is not None
    save_chunk(db, job_id, "w1", batch, None, None, 30)
    return job_id


def small_history(client: Any, db: Any) -> str:
    n = 21
    x = np.stack([np.arange(n) * 0.5, -np.arange(n) / 3.0], axis=1)
    x[7, 1] = math.nan
    batch = HistoryRows(steps=np.arange(n), f=np.linspace(640, 1, n), grad_norm=np.full(n, math.inf),
                         lr=np.full(n, 1e-3), x=x, grad=x * 20)
    return stored_job(client, db, SPEC, batch)


OUT_OF_RANGE = [
    ("start", str(2**31)), ("start", str(2**63)), ("start", str(2**64 + 1)), ("start", "9" * 5000),
    ("start", "-1"), ("start", "1e3"), ("every", str(2**31)), ("every", str(2**63)), ("every", "9" * 60),
    ("every", "0"), ("every", "-5"), ("limit", "0"), ("limit", "abc"), ("format", "xml"), ("format", ""),
    ("fields", "x,nope"), ("fields", "f," + "z" * 10_000),
]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_out_of_range_parameters_are_a_400_naming_them(api, fmt):
    client, db = api
    job_id = small_history(client, db)
    for name, value in OUT_OF_RANGE:
        resp = client.get(f"/v1/jobs/{job_id}/history", query_string={"format": fmt, name: value})
        assert resp.status_code == 400, (name, value[:40], resp.get_data(as_text=True)[:300])
        error = resp.get_json()["error"]
        assert error["field"] == name and error["code"] == "invalid_parameter", (name, value[:40], error)
        assert len(error["message"]) < 300


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_limit_is_at_most_100000_rows_in_every_format(api, fmt):
    client, db = api
    job_id = small_history(client, db)
    assert client.get(f"/v1/jobs/{job_id}/history?format={fmt}&limit=100001").status_code == 400
    assert client.get(f"/v1/jobs/{job_id}/history?format={fmt}&limit=100000").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_largest_start_and_every_are_answered(api, fmt):
    client, db = api
    job_id = small_history(client, db)
    top = 2**31 - 1
    empty = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&start={top}")
    assert empty.status_code == 200
    only_zero = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&every={top}&fields=f")
    assert only_zero.status_code == 200
    if fmt == "json":
        assert empty.get_json() == {"rows": [], "next_start": None}
        assert only_zero.get_json() == {"rows": [{"step": 0, "f": 640.0}], "next_start": None}
    elif fmt == "csv":
        assert empty.get_data(as_text=True) == "step,f,grad_norm,lr,x_0,x_1,grad_0,grad_1\n"
        assert only_zero.get_data(as_text=True) == "step,f\n0,640.0\n"
    else:
        assert empty.get_data(as_text=True) == ""
        assert only_zero.get_data(as_text=True) == '{"step": 0, "f": 640.0}\n'
    assert client.get(f"/v1/jobs/{job_id}/history?format={fmt}&limit=100000").status_code == 200


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_database_failure_before_the_first_row_is_an_error_status(api, fmt, monkeypatch):
    client, db = api
    job_id = small_history(client, db)

    def unavailable(*args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("the database is unavailable: test")
        yield  # a generator, as the real one: it fails on its first page

    monkeypatch.setattr(history_api, "iter_history", unavailable)
    monkeypatch.setattr(history_api, "iter_text", unavailable)  # PostgreSQL's own formatting of CSV/NDJSON
    resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}")
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "database_unavailable"
    assert resp.headers["Retry-After"]


def expected_csv(job_rows: list[dict[str, Any]], fields: list[str], numel: int) -> str:
    """What the API wrote before it streamed by size: ``csv.writer`` on floats as ``repr``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header: list[str] = []
    for name in fields:
        header.extend([f"{name}_{i}" for i in range(numel)] if name in ("x", "grad") else [name])
    writer.writerow(header)
    for row in job_rows:
        out: list[Any] = []
        for name in fields:
            value = row.get(name)
            if name in ("x", "grad"):
                out.extend(value if value is not None else [""] * numel)
            else:
                out.append(value)
        writer.writerow([repr(v) if isinstance(v, float) else v for v in out])
    return buf.getvalue()


def test_every_format_keeps_its_shape_and_values(api):
    client, db = api
    job_id = small_history(client, db)
    base = f"/v1/jobs/{job_id}/history"
    rows = client.get(base + "?limit=100000").get_json()["rows"]
    assert [r["step"] for r in rows] == list(range(21))
    assert rows[7]["x"] == [3.5, "NaN"] and rows[3]["grad_norm"] == "Infinity"
    flat = [{"step": i, "f": float(np.linspace(640, 1, 21)[i]), "grad_norm": math.inf, "lr": 1e-3,
             "x": [i * 0.5, math.nan if i == 7 else -i / 3.0], "grad": [i * 10.0, math.nan if i == 7 else -i / 3.0 * 20]}
            for i in range(21)]
    text = client.get(base + "?format=csv").get_data(as_text=True)
    assert text == expected_csv(flat, ["step", "f", "grad_norm", "lr", "x", "grad"], 2)
    nd = client.get(base + "?format=ndjson&start=5&limit=3&fields=x").get_data(as_text=True).splitlines()
    assert [json.loads(line) for line in nd] == [{"step": s, "x": rows[s]["x"]} for s in (5, 6, 7)]
    page = client.get(base + "?start=2&every=4&limit=2").get_json()
    assert [r["step"] for r in page["rows"]] == [4, 8] and page["next_start"] == 12


def wide_job(client: Any, db: Any, numel: int, n: int, seed: int) -> tuple[str, np.ndarray]:
    """A stored job of ``n`` rows with a random x of ``numel`` values each; (its id, x)."""
    x = np.random.default_rng(seed).standard_normal((n, numel))
    spec = {**SPEC, "x0": {"shape": [numel], "init": "normal"}, "record": {"x": True}}
    return stored_job(client, db, spec, HistoryRows(steps=np.arange(n), f=np.arange(n, dtype=float),
                                                     grad_norm=np.ones(n), lr=np.full(n, 0.1), x=x)), x


@pytest.mark.slow
def test_a_wide_history_leaves_in_bounded_pieces(api, monkeypatch):
    client, db = api
    numel, n = 150_000, 6
    job_id, x = wide_job(client, db, numel, n, seed=0)
    monkeypatch.setattr(history_api, "FLUSH_CHARS", 200_000)
    for fmt in FORMATS:
        resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}", buffered=False)
        assert resp.status_code == 200
        parts = [p.decode() if isinstance(p, bytes) else p for p in resp.response]
        resp.close()
        text = "".join(parts)
        # a row is about 3 MB of text: it leaves in pieces, never more than one flush plus one slice
        assert max(len(p) for p in parts) <= 200_000 + CSV_VALUES_PER_PIECE * 26, fmt
        assert len(parts) > 2 * n, fmt
        if fmt == "csv":
            lines = text.splitlines()
            assert len(lines) == n + 1 and lines[0].split(",")[4] == "x_0"
            assert [float(v) for v in lines[3].split(",")[4:]] == x[2].tolist()
        else:
            rows = json.loads(text)["rows"] if fmt == "json" else [json.loads(line) for line in text.splitlines()]
            assert [r["x"] for r in rows] == x.tolist()


@pytest.mark.parametrize("shape", [[], [1], [5], [3, 4], [2, 3, 2], [1, 7], [7, 1], [40_000], [200, 300]])
def test_json_rows_in_pieces_are_exactly_the_json_of_the_row(shape):
    numel = math.prod(shape)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(numel)
    if numel > 5:
        x[1], x[2], x[3], x[4], x[5] = math.nan, -math.inf, -0.0, 5e-324, 1e300
    row = {"step": 3, "f": math.nan, "grad_norm": 2.5, "lr": None, "x": x, "grad": None}
    fields = ["step", "f", "grad_norm", "lr", "x", "grad"]
    expected = json.dumps(row_json({**row, "x": x.tolist()}, fields, shape))
    assert "".join(json_row(row, fields, shape)) == expected
    assert "".join(json_row(row, ["step"], shape)) == json.dumps({"step": 3})


# -- the fast paths write the bytes of the row-by-row path --------------------------------------

ODD_VALUES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 640.0, -3.0, 1e15, -1234567890123456.8, 9007199254740993.0,
              1e16, 1.5e-7, 1e-5, 0.0001, 5e-324, 1.7976931348623157e308, 123456789012345.6, 0.1, 1 / 3, 2.5e-5]
EXPORT_SHAPES = [([2], {"grad": True}), ([1], {}), ([3, 4], {"grad": True}), ([2, 3, 2], {}), ([1, 7], {}),
                 ([2], {"x": False}), ([2], {"x": False, "grad": True}), ([30], {"grad": True})]
EXPORT_QUERIES = ["", "start=3&limit=5", "every=3", "start=2&every=4&limit=2", "fields=x,f", "fields=grad",
                  "fields=lr,step", "points=4", "points=4&start=5&fields=x", "limit=1", "start=1000"]


def odd_history(client: Any, db: Any, shape: list[int], record: dict[str, Any], n: int = 23) -> str:
    numel = math.prod(shape)
    rng = np.random.default_rng(len(shape) * 100 + numel)
    values = np.array(ODD_VALUES)

    def column(k: int) -> np.ndarray:
        return np.where(rng.random(k) < 0.5, rng.choice(values, k), rng.standard_normal(k) * 10.0 ** rng.integers(-8, 8, k))

    x = column(n * numel).reshape(n, numel)
    grad = column(n * numel).reshape(n, numel)
    batch = HistoryRows(steps=np.arange(n), f=column(n), grad_norm=column(n), lr=np.full(n, 1e-3),
                         x=x if record.get("x", True) else None, grad=grad if record.get("grad") else None)
    spec = {**SPEC, "x0": {"shape": shape, "init": "ones"}, "steps": n - 1, "record": record}
    return stored_job(client, db, spec, batch)


@pytest.mark.slow
@pytest.mark.parametrize("shape,record", EXPORT_SHAPES)
def test_block_and_database_formatting_write_the_bytes_of_the_row_path(api, monkeypatch, shape, record):
    client, db = api
    job_id = odd_history(client, db, shape, record)
    queries = EXPORT_QUERIES + ([] if record.get("x", True) else ["fields=x,grad,f"])

    def bodies() -> dict[tuple[str, str], str]:
        out = {}
        for fmt in FORMATS:
            for query in queries:
                resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&{query}")
                assert resp.status_code == 200, (fmt, query, resp.get_data(as_text=True)[:300])
                out[fmt, query] = resp.get_data(as_text=True)
        return out

    fast = bodies()  # on PostgreSQL, CSV and NDJSON formatted by the database; the rest a block at a time
    monkeypatch.setattr(history_api, "text_width_ok", lambda db, width: False)
    blocks = bodies()
    monkeypatch.setattr(history_api, "BLOCK_MAX_WIDTH", -1)
    rows = bodies()  # the row-by-row path, as before
    for key, expected in rows.items():
        assert blocks[key] == expected, key
        assert fast[key] == expected, key
    assert "nan" in rows["csv", ""] and "-inf" in rows["csv", ""] and '"-Infinity"' in rows["ndjson", ""]
    numel = math.prod(shape)
    full = [row for row in (json.loads(line) for line in rows["ndjson", ""].splitlines())]
    assert len(full) == 23
    if record.get("x", True):
        assert rows["csv", ""].splitlines()[0].count("x_") == numel


@pytest.mark.slow
def test_a_history_of_middling_width_leaves_in_bounded_blocks(api, monkeypatch):
    """Rows up to BLOCK_MAX_WIDTH values are formatted a block at a time: a block holds about
    BLOCK_VALUES values, so its text stays bounded whatever the width (and equals the row path's)."""
    client, db = api
    numel, n = 3000, 40
    job_id, x = wide_job(client, db, numel, n, seed=3)
    monkeypatch.setattr(history_api, "BLOCK_VALUES", 20_000)  # 6 rows a block
    texts = {}
    for fmt in FORMATS:
        resp = client.get(f"/v1/jobs/{job_id}/history?format={fmt}&limit={n}", buffered=False)
        parts = [p.decode() if isinstance(p, bytes) else p for p in resp.response]
        resp.close()
        assert len(parts) >= n // 6, fmt
        assert max(len(p) for p in parts) <= 20_000 * 26 + 20 * numel, fmt
        texts[fmt] = "".join(parts)
    monkeypatch.setattr(history_api, "BLOCK_MAX_WIDTH", -1)
    for fmt in FORMATS:
        assert client.get(f"/v1/jobs/{job_id}/history?format={fmt}&limit={n}").get_data(as_text=True) == texts[fmt]
