"""Migration 0016 (job tensors) on results stored before it, on each backend: a result's x of more
than 10,000 numbers moves out of the JSON into ``job_tensors`` bit for bit (NaN and infinities
too), a small one stays; down and up again keeps the values."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import func, select, text

from service.store import jobs as job_store
from service.store import tensors
from service.store.migrate import upgrade
from service.store.models import JobTensor
from tests.store.test_migration_owners import downgrade

BIG, SMALL = "0b16b16b-0000-4000-8000-000000000001", "05a11000-0000-4000-8000-000000000002"
VALUES = np.linspace(-1.0, 1.0, 12_000)
VALUES[7], VALUES[8], VALUES[9] = math.nan, math.inf, -math.inf


def _safe(v: float) -> object:
    return v if math.isfinite(v) else ("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))


def old_jobs(db) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(timezone.utc)
    with db.session() as s:
        for job_id, x in ((BIG, [_safe(v) for v in VALUES.tolist()]), (SMALL, [1.0, 2.0])):
            result = {"x": x, "f": 1.0, "grad_norm": 0.5, "steps": 1, "stop_reason": "steps", "graph": [],
                      "device": "cpu", "seconds": 0.1}
            s.execute(text("INSERT INTO jobs (id, owner, status, spec, shape, queue, created_at, attempts, "
                           "cancel_requested, reserved_values, result) VALUES (:id, 'local', 'succeeded', :spec, "
                           ":shape, 'cpu', :now, 1, :no, 0, :result)"),
                      {"id": job_id, "spec": json.dumps({"objective": "(x**2).sum()", "x0": [0.0], "steps": 1}),
                       "shape": json.dumps([len(x)]), "now": now, "no": False, "result": json.dumps(result)})


def test_big_results_move_to_binary_bit_for_bit_and_back(empty_db):
    db = empty_db
    upgrade(db, "0015")
    old_jobs(db)
    upgrade(db)
    big = job_store.get_job(db, BIG).result
    assert tensors.is_summary(big["x"]) and big["x"]["size"] == 12_000 and big["f"] == 1.0
    assert tensors.load(db, BIG, "x").tobytes() == VALUES.tobytes()
    assert big["x"] == tensors.summary(VALUES)  # the same summary a worker writes
    assert job_store.get_job(db, SMALL).result["x"] == [1.0, 2.0]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(JobTensor)) == 1

    downgrade(db, "0015")
    with db.session() as s:
        stored = json.loads(s.scalar(text("SELECT CAST(result AS TEXT) FROM jobs WHERE id = :i"), {"i": BIG}))
    assert stored["x"][7:10] == ["NaN", "Infinity", "-Infinity"] and len(stored["x"]) == 12_000
    upgrade(db)
    assert tensors.load(db, BIG, "x").tobytes() == VALUES.tobytes()
