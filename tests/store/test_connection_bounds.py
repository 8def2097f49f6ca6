"""Every PostgreSQL session Descent opens is bounded in time, and a fault of the database (read-only,
a lock held past lock_timeout, a statement or an idle transaction cut off, a busy pool) is a
StoreUnavailable, never a driver error that the API would answer 500. Real PostgreSQL, no mocks."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import text

from service.config import DatabaseTimeouts
from service.store import Database, StoreUnavailable
from service.store.db import unavailable_reason
from testkit.backends import PG_ADMIN_URL


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def read_only(db: Database) -> Iterator[None]:
    """The test's own database read-only for new sessions (as during a failover), then writable."""
    name = db.engine.url.database
    with psycopg.connect(_plain(PG_ADMIN_URL), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    db.engine.dispose()  # the pool's sessions were opened before: new ones see the setting
    try:
        yield
    finally:
        with psycopg.connect(_plain(PG_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        db.engine.dispose()


@pytest.fixture
def bounded(pg_db):  # type: ignore[no-untyped-def]
    """A second Database on the test's PostgreSQL database, with short bounds."""
    db = Database(pg_db.url, DatabaseTimeouts(statement=2, lock=0.5, idle_in_transaction=1, tcp=4, pool=0.5,
                                              connect=2))
    yield db
    db.engine.dispose()


def _show(db: Database, name: str) -> str:
    with db.session() as s:
        return str(s.execute(text(f"SHOW {name}")).scalar())


def _unavailable_within(db: Database, sql: str, match: str, seconds: float) -> None:
    """``sql`` on ``db`` fails as StoreUnavailable naming ``match``, within ``seconds``: bounded, not hung."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=match):
        with db.session() as s:
            s.execute(text(sql))
    assert time.monotonic() - started < seconds


def test_each_session_carries_the_timeouts_on_both_ends(pg_db):
    db = Database(pg_db.url, DatabaseTimeouts.for_lease(4))
    try:
        assert _show(db, "statement_timeout") == "5min"
        assert _show(db, "lock_timeout") == "1s"
        assert _show(db, "idle_in_transaction_session_timeout") == "4s"
        assert _show(db, "tcp_user_timeout") == "4000"
        assert _show(db, "jit") == "off"
        with db.engine.connect() as conn:
            client = conn.connection.driver_connection.info.get_parameters()
        assert client["keepalives"] == "1" and client["tcp_user_timeout"] == "4000"
        assert client["keepalives_idle"] == "1" and client["keepalives_count"] == "3"
    finally:
        db.engine.dispose()


def test_a_database_without_explicit_bounds_takes_them_from_the_environment(pg_db, monkeypatch):
    monkeypatch.setenv("DESCENT_LEASE_SECONDS", "8")
    db = Database(pg_db.url)
    try:
        assert _show(db, "lock_timeout") == "2s"
        assert _show(db, "idle_in_transaction_session_timeout") == "8s"
        assert db.engine.pool.timeout() == 3
    finally:
        db.engine.dispose()


def test_a_read_only_database_is_unavailable_and_fails_the_write_probe(bounded):
    bounded.check_writable()
    with read_only(bounded):
        with bounded.session() as s:  # reads still work
            assert s.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
        with pytest.raises(StoreUnavailable, match="read-only") as caught:
            with bounded.session() as s:
                s.execute(text("DELETE FROM jobs"))
        assert caught.value.status == 503 and caught.value.headers["Retry-After"]
        with pytest.raises(StoreUnavailable, match="read-only"):
            bounded.check_writable()
    bounded.check_writable()


def test_a_raw_driver_error_past_sqlalchemy_is_mapped_too(bounded):
    """A COPY's errors come from psycopg itself (service.store.chunks)."""
    with read_only(bounded):
        with pytest.raises(StoreUnavailable, match="read-only"):
            with bounded.session() as s:
                raw = s.connection().connection.driver_connection
                with raw.cursor() as cur:
                    cur.execute("CREATE TABLE nope (x int)")
    assert unavailable_reason(ValueError("not the database's")) is None


def test_a_row_locked_by_another_session_is_unavailable_within_the_lock_timeout(bounded):
    with bounded.session() as s:
        s.execute(text("CREATE TABLE locked_rows (id int PRIMARY KEY, v int)"))
        s.execute(text("INSERT INTO locked_rows VALUES (1, 0)"))
    holder = psycopg.connect(_plain(bounded.url))
    try:
        holder.execute("SELECT * FROM locked_rows WHERE id = 1 FOR UPDATE")  # held, in a transaction
        _unavailable_within(bounded, "UPDATE locked_rows SET v = 1 WHERE id = 1", "locked", 3)
    finally:
        holder.close()
    with bounded.session() as s:  # the lock gone, the write goes through
        s.execute(text("UPDATE locked_rows SET v = 1 WHERE id = 1"))


@pytest.mark.slow  # waits out a server's timeout or reconnect: seconds
def test_a_statement_past_the_statement_timeout_is_unavailable(bounded):
    _unavailable_within(bounded, "SELECT pg_sleep(30)", "DESCENT_DB_STATEMENT_TIMEOUT", 10)


def test_a_session_idle_inside_its_transaction_is_ended_by_the_server(bounded):
    """As a worker frozen (SIGSTOP) inside a transaction: the server ends its session and frees
    its locks within DESCENT_DB_IDLE_IN_TRANSACTION_TIMEOUT; its next statement is unavailable."""
    with pytest.raises(StoreUnavailable):
        with bounded.session() as s:
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar()
            with psycopg.connect(_plain(bounded.url), autocommit=True) as watcher:
                deadline = time.monotonic() + 20
                while watcher.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                    assert time.monotonic() < deadline, "the idle transaction's session was never ended"
                    time.sleep(0.05)
            s.execute(text("SELECT 1"))
    with bounded.session() as s:  # a fresh session works
        assert s.execute(text("SELECT 1")).scalar() == 1


def test_an_exhausted_pool_is_unavailable_within_the_pool_timeout(bounded):
    held = [bounded.engine.connect() for _ in range(10)]  # pool_size 5 + max_overflow 5
    try:
        _unavailable_within(bounded, "SELECT 1", "pool", 3)
    finally:
        for conn in held:
            conn.close()
    with bounded.session() as s:
        assert s.execute(text("SELECT 1")).scalar() == 1


@pytest.mark.slow  # waits out a server's timeout or reconnect: seconds
def test_waiters_on_a_locked_row_never_starve_other_readers(bounded):
    """Many writes stuck behind a lock give up within the lock timeout and free their connections:
    a read meanwhile still gets one."""
    with bounded.session() as s:
        s.execute(text("CREATE TABLE hot (id int PRIMARY KEY, v int)"))
        s.execute(text("INSERT INTO hot VALUES (1, 0)"))
    holder = psycopg.connect(_plain(bounded.url))
    outcomes: list[str] = []

    def write() -> None:
        try:
            with bounded.session() as s:
                s.execute(text("UPDATE hot SET v = v + 1 WHERE id = 1"))
            outcomes.append("written")
        except StoreUnavailable:
            outcomes.append("unavailable")

    try:
        holder.execute("SELECT * FROM hot WHERE id = 1 FOR UPDATE")
        threads = [threading.Thread(target=write) for _ in range(12)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert outcomes == ["unavailable"] * 12 and time.monotonic() - started < 5
        with bounded.session() as s:
            assert s.execute(text("SELECT v FROM hot")).scalar() == 0
    finally:
        holder.close()


def test_sqlite_write_probe(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'probe.db'}")
    try:
        with db.session() as s:
            s.execute(sa.text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
            s.execute(sa.text("INSERT INTO alembic_version VALUES ('x')"))
        db.check_writable()
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".descent-probe")) == []
    finally:
        db.engine.dispose()
