"""Migration 0017 (history chunks) on histories stored one row per step, on each backend: every
row moves into chunks bit for bit (NaN, infinities and -0.0 too), reads as before through the
store and the view ``history_rows``; down moves the rows back into ``history``, and up again."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import text

from service.store.history import iter_history
from service.store.migrate import upgrade
from tests.store.test_migration_owners import downgrade

WIDE, BARE = "0c0c0c0c-0000-4000-8000-000000000017", "0b0b0b0b-0000-4000-8000-000000000017"
ROWS = 600  # five chunks of a 2-element x and grad (126 rows each)
SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e23, 0.1]


def values(n: int, seed: int) -> np.ndarray:
    out = np.random.default_rng(seed).standard_normal(n) * 10.0 ** np.random.default_rng(seed + 1).integers(-30, 30, n)
    out[:len(SPECIAL)] = SPECIAL
    return out


def old_history() -> dict[str, dict[str, Any]]:
    steps = np.arange(0, 3 * ROWS, 3)
    wide = {"steps": steps, "f": values(ROWS, 1), "grad_norm": values(ROWS, 2), "lr": np.full(ROWS, 1e-3),
            "x": values(2 * ROWS, 3).reshape(ROWS, 2), "grad": values(2 * ROWS, 4).reshape(ROWS, 2)}
    bare = {"steps": np.arange(3), "f": np.array([3.0, math.nan, 1.0]), "grad_norm": np.ones(3), "lr": np.full(3, 0.5),
            "x": None, "grad": None}
    return {WIDE: wide, BARE: bare}


def _pg_array(values: np.ndarray) -> str:
    return "{" + ",".join("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity") if math.isinf(v)
                          else repr(float(v)) for v in values) + "}"


def write_old(db: Any, history: dict[str, dict[str, Any]]) -> None:
    """The rows as revision 0016 stores them: PostgreSQL floats and float8[]; SQLite REALs (NaN
    as the text 'NaN') and JSON text with NaN/Infinity tokens."""
    postgres = db.dialect == "postgresql"
    x_sql = "CAST(:x AS float8[])" if postgres else ":x"
    with db.session() as s:
        for job_id, h in history.items():
            s.execute(text("INSERT INTO jobs (id, owner, status, spec, shape, queue, created_at, attempts, "
                           "cancel_requested, reserved_values) VALUES (:id, 'local', 'succeeded', :spec, '[2]', 'cpu', "
                           ":now, 1, :no, 0)"),
                      {"id": job_id, "spec": json.dumps({"objective": "x.sum()", "x0": [0.0, 0.0], "steps": 1}),
                       "now": datetime.now(timezone.utc), "no": False})
            for i, step in enumerate(h["steps"].tolist()):
                def one(v: float) -> Any:
                    return "NaN" if math.isnan(v) and not postgres else float(v)

                def array(name: str) -> Any:
                    if h[name] is None:
                        return None
                    return _pg_array(h[name][i]) if postgres else json.dumps(h[name][i].tolist())
                s.execute(text(f"INSERT INTO history (job_id, step, f, grad_norm, lr, x, grad) VALUES (:id, :step, "
                               f":f, :gn, :lr, {x_sql}, {x_sql.replace(':x', ':grad')})"),
                          {"id": job_id, "step": step, "f": one(h["f"][i]), "gn": one(h["grad_norm"][i]),
                           "lr": one(h["lr"][i]), "x": array("x"), "grad": array("grad")})


def same(got: np.ndarray | None, expected: np.ndarray | None) -> bool:
    if got is None or expected is None:
        return got is None and expected is None
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return got.shape == expected.shape and np.isnan(got).tolist() == np.isnan(expected).tolist() and \
        got.view(np.int64)[~np.isnan(got)].tolist() == expected.view(np.int64)[~np.isnan(expected)].tolist()


def assert_read_back(db: Any, history: dict[str, dict[str, Any]]) -> None:
    for job_id, h in history.items():
        pages = list(iter_history(db, job_id, numel=2, rows_per_page=250))
        assert np.concatenate([p.steps for p in pages]).tolist() == h["steps"].tolist()
        for name in ("f", "grad_norm", "lr", "x", "grad"):
            got = [getattr(p, name) for p in pages]
            assert same(None if got[0] is None else np.concatenate(got), h[name]), (job_id, name)


def test_rows_move_into_chunks_bit_for_bit_and_back(empty_db):
    db = empty_db
    history = old_history()
    upgrade(db, "0016")
    write_old(db, history)
    if db.dialect == "sqlite":  # a REAL column of SQLite keeps no -0.0 (x and grad, JSON text, do)
        for h in history.values():
            h["f"], h["grad_norm"], h["lr"] = h["f"] + 0.0, h["grad_norm"] + 0.0, h["lr"] + 0.0
    upgrade(db)
    assert_read_back(db, history)
    with db.session() as s:
        chunks = dict(s.execute(text("SELECT job_id, count(*) FROM history_chunks GROUP BY job_id")).all())
        assert chunks == {WIDE: 5, BARE: 1}
        view = s.execute(text("SELECT step, f, x FROM history_rows WHERE job_id = :j ORDER BY step"), {"j": WIDE}).all()
    assert [r[0] for r in view] == history[WIDE]["steps"].tolist()
    assert same(np.array([float(r[1]) for r in view]), history[WIDE]["f"])  # SQLite: 'NaN' is text
    xs = [r[2] if db.dialect == "postgresql" else json.loads(r[2].replace('"NaN"', "NaN").replace("1e999", "Infinity"))
          for r in view]
    assert same(np.array(xs), history[WIDE]["x"])

    downgrade(db, "0016")
    with db.session() as s:
        rows = s.execute(text("SELECT step, f, x, grad FROM history WHERE job_id = :j ORDER BY step"), {"j": WIDE}).all()
    assert [r[0] for r in rows] == history[WIDE]["steps"].tolist()
    assert same(np.array([float(r[1]) for r in rows]), history[WIDE]["f"])
    for column, name in ((2, "x"), (3, "grad")):
        stored = [r[column] if db.dialect == "postgresql" else json.loads(r[column]) for r in rows]
        assert same(np.array(stored), history[WIDE][name]), name
    upgrade(db)
    assert_read_back(db, history)
