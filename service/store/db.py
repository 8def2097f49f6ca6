"""The one place that opens database sessions, commits or rolls back, and turns driver errors
into the store's own errors."""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import Engine, String, any_, bindparam, create_engine, event, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import DescentError, ErrorCode, first_line


class StoreError(DescentError):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (or is locked for too long); retry later."""

    code = ErrorCode.DATABASE_UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; try again shortly", headers={"Retry-After": "2"})


class NotFound(StoreError):
    code = ErrorCode.NOT_FOUND


class Conflict(StoreError):
    code = ErrorCode.CONFLICT


class LeaseLost(StoreError):
    """This worker no longer holds the job (it was reclaimed, cancelled or finished)."""

    code = ErrorCode.CONFLICT


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def clock(dialect: str) -> Any:
    """'Now' for every timestamp the store writes or compares: the database server's clock on
    PostgreSQL, so hosts whose clocks disagree still agree on when a lease lapses or a queued
    job is overdue; this process's clock on SQLite (embedded: one machine)."""
    return func.now() if dialect == "postgresql" else utcnow()


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every timestamp the store stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


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
    # JIT off: PostgreSQL compiles a statement once its cost estimate passes a threshold, and the
    # bulk statements of a batch (a thousand jobs ended in one UPDATE) passed it and spent more
    # time compiling (about 200 ms each) than running.
    return create_engine(url, pool_size=5, max_overflow=5, pool_recycle=3600,
                         connect_args={"connect_timeout": 5, "options": "-c jit=off"})


def one_of(column: Any, values: Sequence[str], dialect: str) -> Any:
    """``column IN values``: on PostgreSQL ``= ANY(array)``, one parameter however many values (an
    IN list of a batch's thousand ids costs its statement's conversion tens of milliseconds)."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(String())))
    return column.in_(list(values))


def owned_row(s: Session, model: type, row_id: str, owner: str | None, id_pattern: re.Pattern[str],
              what: str, for_update: bool = False) -> Any:
    """The ``model`` row with ``row_id``; with ``owner``, only if it is that owner's: another's
    is NotFound exactly as an absent one is (ids leak nothing). An id not of ``id_pattern``'s
    shape names nothing and costs no query. ``for_update`` locks the row for the transaction."""
    row = s.get(model, row_id, with_for_update=for_update) if id_pattern.fullmatch(row_id) else None
    if row is None or (owner is not None and row.owner != owner):
        raise NotFound(f"no {what} with id {row_id[:80]!r}")
    return row


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
                raise StoreUnavailable(f"the database is unavailable: {first_line(exc.orig)}") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers (``/readyz``); a second try, on a
        fresh connection, once a stale pooled one has been dropped."""
        for attempt in range(2):
            try:
                with self.session() as s:
                    s.execute(text("SELECT 1"))
                return
            except StoreUnavailable:
                if attempt == 1:
                    raise
