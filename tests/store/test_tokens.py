"""Tokens in the store and through ``descent tokens``: random, stored hashed, shown once, revocable;
and the owner every job gets, including the jobs made before owners existed."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from service.store import Database
from service.store import jobs as job_store
from service.store import tokens
from service.store.models import Token
from service.status import JobStatus

SPEC = {"objective": "x.sum()", "x0": [1, 2], "steps": 10}


def test_a_token_is_random_stored_hashed_and_revocable(db):
    record, secret = tokens.create_token(db, "alice")
    _, other = tokens.create_token(db, "alice")
    assert secret != other and secret.startswith(tokens.PREFIX) and len(secret) >= len(tokens.PREFIX) + 32
    with db.session() as s:
        stored = s.scalar(select(Token).where(Token.id == record.id))
        assert stored.hash == tokens.digest(secret) and secret not in (stored.hash, stored.id)
    assert tokens.verify_token(db, secret) == record
    assert tokens.verify_token(db, secret[:-1]) is None
    assert tokens.revoke_token(db, record.id).revoked_at is not None
    assert tokens.verify_token(db, secret) is None
    assert tokens.verify_token(db, other) is not None


@pytest.mark.parametrize("owner", ["", " alice", "a" * 201, "al/ice", "al\x00ice"])
def test_an_owner_name_is_checked(db, owner):
    with pytest.raises(ValueError, match="owner"):
        tokens.create_token(db, owner)


def test_a_job_whose_cancel_was_requested_never_ends_succeeded(db):
    job, _ = job_store.create_job(db, SPEC, [2], "cpu", owner="alice")
    job_store.claim_job(db, job.id, "w1", 30, 3)
    job_store.request_cancel(db, job.id)
    job_store.finish_job(db, job.id, "w1", JobStatus.SUCCEEDED, {"f": 1.0}, None)
    assert job_store.get_job(db, job.id).status == JobStatus.CANCELLED


@pytest.mark.slow
def test_descent_tokens_create_list_revoke(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}, "DESCENT_DATA_DIR": str(tmp_path)}

    def descent(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    assert descent("db", "upgrade").returncode == 0
    made = descent("tokens", "create", "--owner", "ops", "--admin")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    db = Database(f"sqlite:///{tmp_path / 'descent.db'}")
    record = tokens.verify_token(db, secret)
    assert record is not None and record.owner == "ops" and record.admin
    listed = descent("tokens", "list").stdout
    assert record.id in listed and "ops" in listed and secret not in listed
    assert descent("tokens", "revoke", record.id).returncode == 0
    assert tokens.verify_token(db, secret) is None
    assert descent("tokens", "revoke", "nope").returncode == 1
    assert descent("tokens", "create").returncode == 2
