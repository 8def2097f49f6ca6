"""Migration 0015 (data tensors per owner) on data stored before it, on each backend: a tensor two
owners' jobs shared becomes one copy each, every job still reads its values, a delete then counts
only its owner's copies; down and up again keeps the data."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import func, select, text

from service.store import data
from service.store import jobs as job_store
from service.store.deletion import delete_job
from service.store.migrate import upgrade
from service.store.models import DataTensor, JobData
from tests.store.test_migration_owners import downgrade

SHARED, ALICE_ONLY = [[1.0, 2.0], [3.0, 4.0]], [5.0, -6.0]
IDS = {"alice": "0a11ce00-0000-4000-8000-000000000001", "bob": "0b0b0000-0000-4000-8000-000000000002",
       "alice2": "0a11ce00-0000-4000-8000-000000000003"}


def _tensor(values: list) -> tuple[str, list[int], bytes]:  # type: ignore[type-arg]
    tensors = data.Tensors()
    ref = tensors.reference(values)
    shape, raw = tensors.values[ref["sha256"]]
    return ref["sha256"], shape, raw


def old_rows(db) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Three jobs as the 0014 schema holds them: alice's two and bob's one read SHARED (one row),
    alice's first also reads ALICE_ONLY; one more tensor no job reads."""
    digests = {}
    now = datetime.now(timezone.utc)
    with db.session() as s:
        for name, values in (("S", SHARED), ("U", ALICE_ONLY), ("orphan", [7.0])):
            digest, shape, raw = _tensor(values)
            digests[name] = digest
            s.execute(text("INSERT INTO data_tensors (digest, shape, content, created_at) VALUES (:d, :s, :c, :t)"),
                      {"d": digest, "s": json.dumps(shape), "c": raw, "t": now})
        for key, job_id in IDS.items():
            owner = key.rstrip("2")
            reads = {"A": digests["S"], **({"u": digests["U"]} if key == "alice" else {})}
            spec = {"objective": "(A @ x).sum()" + (" + u.sum()" if "u" in reads else ""), "x0": [0.0, 0.0],
                    "steps": 3, "data": {n: {"sha256": d, "shape": [2, 2] if n == "A" else [2]} for n, d in reads.items()}}
            s.execute(text("INSERT INTO jobs (id, owner, status, spec, shape, queue, created_at, attempts, "
                           "cancel_requested, reserved_values) VALUES (:id, :owner, 'succeeded', :spec, '[2]', 'cpu', "
                           ":now, 1, :no, 0)"),
                      {"id": job_id, "owner": owner, "spec": json.dumps(spec), "now": now, "no": False})
            for name, digest in reads.items():
                s.execute(text("INSERT INTO job_data (job_id, name, digest) VALUES (:j, :n, :d)"),
                          {"j": job_id, "n": name, "d": digest})
    return digests


def _values(db, key: str) -> dict:  # type: ignore[type-arg]
    [job] = data.with_values(db, [job_store.get_job(db, IDS[key])])
    return job.spec["data"]


def test_shared_tensors_become_one_copy_per_owner_and_keep_their_values(empty_db):
    db = empty_db
    upgrade(db, "0014")
    digests = old_rows(db)
    upgrade(db)
    with db.session() as s:
        assert sorted(s.execute(select(DataTensor.owner, DataTensor.digest)).all()) == sorted(
            [("alice", digests["S"]), ("alice", digests["U"]), ("bob", digests["S"])])  # the unread one went
        links = {(r.job_id, r.name): (r.owner, r.digest) for r in s.scalars(select(JobData))}
        contents = {(r.owner, r.digest): r.content for r in s.scalars(select(DataTensor))}
    assert links[(IDS["bob"], "A")] == ("bob", digests["S"]) and links[(IDS["alice"], "u")] == ("alice", digests["U"])
    assert len(links) == 4
    assert np.frombuffer(contents[("bob", digests["S"])], "<f8").tolist() == [1.0, 2.0, 3.0, 4.0]
    assert _values(db, "alice") == {"A": SHARED, "u": ALICE_ONLY}
    assert _values(db, "bob") == {"A": SHARED}

    downgrade(db, "0014")
    with db.session() as s:
        assert s.scalar(text("SELECT COUNT(*) FROM data_tensors")) == 2
        assert s.scalar(text("SELECT COUNT(*) FROM job_data")) == 4
    upgrade(db)
    assert _values(db, "alice2") == {"A": SHARED} and _values(db, "bob") == {"A": SHARED}
    # bob's delete counts his copy only; alice's jobs still read theirs
    assert delete_job(db, IDS["bob"], owner="bob").data_tensors == 1
    assert _values(db, "alice") == {"A": SHARED, "u": ALICE_ONLY}
    assert delete_job(db, IDS["alice"], owner="alice").data_tensors == 1  # u; alice2 still reads A
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DataTensor)) == 1
