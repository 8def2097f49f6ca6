"""Migration 0003 (tokens, owners, reserved values) on data made before it, on each backend:
old jobs get the owner ``local`` and keep their tags and history, up and down and up again."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from alembic import command
from sqlalchemy import func, select, text

from service.store import NotFound
from service.store import jobs as job_store
from service.store.migrate import alembic_config, upgrade
from service.store.models import JobTag

SPEC = {"objective": "x.sum()", "x0": [1, 2], "steps": 10, "tags": {"k": "v"}}
OLD_ID = "01d0a0b0-0000-4000-8000-000000000001"


def old_job(db) -> None:  # type: ignore[no-untyped-def]
    """A tagged job with two history rows, written as the 0002 schema holds them."""
    with db.session() as s:
        s.execute(text("INSERT INTO jobs (id, status, spec, shape, queue, created_at, attempts, cancel_requested) "
                       "VALUES (:id, 'succeeded', :spec, '[2]', 'cpu', :now, 1, :no)"),
                  {"id": OLD_ID, "spec": json.dumps(SPEC), "now": datetime.now(timezone.utc), "no": False})
        s.execute(text("INSERT INTO job_tags (job_id, key, value) VALUES (:id, 'k', 'v')"), {"id": OLD_ID})
        for step in (0, 1):
            s.execute(text("INSERT INTO history (job_id, step, f, grad_norm, lr) VALUES (:id, :step, 1, 1, 0.1)"),
                      {"id": OLD_ID, "step": step})


def counts(db, history: str = "history_rows") -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Tags, and history rows (``history``: the table before revision 0017, the view from it on)."""
    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(JobTag)), s.scalar(text(f"SELECT count(*) FROM {history}")))


def downgrade(db, revision: str) -> None:  # type: ignore[no-untyped-def]
    cfg = alembic_config(db.url)
    with db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_old_jobs_belong_to_local_and_keep_tags_and_history(empty_db):
    db = empty_db
    upgrade(db, "0002")
    old_job(db)
    upgrade(db)
    job = job_store.get_job(db, OLD_ID)
    assert job.owner == job_store.LOCAL_OWNER and job.tags == {"k": "v"}
    assert counts(db) == (1, 2)
    assert job_store.list_jobs(db, job_store.JobFilter(tag=("k", "v")))[0][0].id == OLD_ID
    with pytest.raises(NotFound):
        job_store.get_job(db, OLD_ID, owner="alice")
    downgrade(db, "0002")
    assert counts(db, "history") == (1, 2)
    upgrade(db)
    assert counts(db) == (1, 2) and job_store.get_job(db, OLD_ID).owner == job_store.LOCAL_OWNER
