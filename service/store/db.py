"""The one place that opens database sessions, commits or rolls back, and turns driver errors
into the store's own errors."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker


class StoreError(RuntimeError):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (or is locked for too long); retry later."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class LeaseLost(StoreError):
    """This worker no longer holds the job (it was reclaimed, cancelled or finished)."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
            # Take the write lock up front: a deferred transaction that upgrades later fails
            # at once under WAL instead of waiting for the busy timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping (a round trip per checkout): after a server restart the first use of a stale
    # connection fails as StoreUnavailable, SQLAlchemy then drops the whole pool, and callers retry.
    return create_engine(url, pool_size=5, max_overflow=5, pool_recycle=3600, connect_args={"connect_timeout": 5})


class Database:
    """An engine and its session factory; ``session()`` is the only transaction boundary."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except (OperationalError, DBAPIError) as exc:
            try:
                session.rollback()
            except DBAPIError:
                pass  # the connection is gone; the pool has already dropped it
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise StoreUnavailable(f"the database is unavailable: {str(exc.orig).strip().splitlines()[0]}") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        """Drop pooled connections (after a fork: never share sockets between processes)."""
        self.engine.dispose(close=False)
