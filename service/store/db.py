"""The one place that opens database sessions, commits or rolls back, and turns driver errors
into the store's own errors."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import Engine, String, any_, bindparam, create_engine, event, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from service.config import DatabaseTimeouts, database_timeouts_from_env
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


def commit_clock(dialect: str) -> Any:
    """'Now' for a time that says when a transaction's effect became visible (a job's
    ``finished_at``): on PostgreSQL the moment the statement runs (``clock_timestamp()``), not
    the transaction's start (``now()``, which can be seconds earlier, before the job's last rows
    were written); this process's clock on SQLite, read when the statement is built."""
    return func.clock_timestamp() if dialect == "postgresql" else utcnow()


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every timestamp the store stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def postgres_options(timeouts: DatabaseTimeouts) -> str:
    """The server-side session settings of every PostgreSQL connection Descent opens (libpq's
    ``options``): each statement, each lock wait and each idle moment inside a transaction is
    bounded, and the server's own TCP keepalives and ``tcp_user_timeout`` end the session of a
    client that vanished (a dead host, a cut link) within about ``timeouts.tcp`` seconds, not the
    server default of about two hours. So a frozen or lost worker's locks go within about a lease.
    JIT off: PostgreSQL compiles a statement once its cost estimate passes a threshold, and the
    bulk statements of a batch (a thousand jobs ended in one UPDATE) passed it and spent more
    time compiling (about 200 ms each) than running."""
    idle, interval, count = timeouts.keepalives()
    settings = {
        "jit": "off",
        "statement_timeout": _ms(timeouts.statement),
        "lock_timeout": _ms(timeouts.lock),
        "idle_in_transaction_session_timeout": _ms(timeouts.idle_in_transaction),
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": count,
        "tcp_user_timeout": _ms(timeouts.tcp),
    }
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


def postgres_connect_args(timeouts: DatabaseTimeouts) -> dict[str, Any]:
    """libpq parameters of every PostgreSQL connection: the connect timeout, this end's TCP
    keepalives and ``tcp_user_timeout`` (a server that stops answering fails the call within about
    ``timeouts.tcp`` seconds, rather than when the kernel gives up), and ``postgres_options``."""
    idle, interval, count = timeouts.keepalives()
    return {"connect_timeout": max(2, round(timeouts.connect)), "keepalives": 1, "keepalives_idle": idle,
            "keepalives_interval": interval, "keepalives_count": count, "tcp_user_timeout": _ms(timeouts.tcp),
            "options": postgres_options(timeouts)}


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def make_engine(url: str, timeouts: DatabaseTimeouts | None = None) -> Engine:
    """The engine for ``url``. On PostgreSQL every connection is bounded in time by ``timeouts``
    (default: from the environment's lease and DESCENT_DB_* variables)."""
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
    # A short pool timeout: requests stuck behind a lock must not hold every caller for 30 s;
    # waiting past it is a StoreUnavailable (503) too.
    timeouts = timeouts or database_timeouts_from_env()
    return create_engine(url, pool_size=5, max_overflow=5, pool_recycle=3600, pool_timeout=timeouts.pool,
                         connect_args=postgres_connect_args(timeouts))


# SQLSTATEs (and their classes) of faults of the database server or its connection, not of the
# request: each is a StoreUnavailable (HTTP 503 database_unavailable with Retry-After), never a 500,
# and never the fault of the job a worker runs. The words say what an operator should look at.
_UNAVAILABLE_STATES = {
    "25006": "the database is read-only (a failover in progress, or default_transaction_read_only)",
    "25P03": "the server ended a session left idle inside its transaction (DESCENT_DB_IDLE_IN_TRANSACTION_TIMEOUT)",
    "25P04": "the server ended a transaction that ran too long (transaction_timeout)",
    "55P03": "a row it needs is locked by another session past DESCENT_DB_LOCK_TIMEOUT",
    "55006": "an object it needs is in use by another session",
    "57014": "a statement was cancelled, past DESCENT_DB_STATEMENT_TIMEOUT or by an operator",
    "57P01": "the database server is shutting down",
    "57P02": "the database server is restarting after a crash",
    "57P03": "the database server is not accepting connections yet",
    "57P04": "the database was dropped",
    "57P05": "the server ended an idle session",
    "53100": "the database server's disk is full",
    "53200": "the database server is out of memory",
    "53300": "the database server has too many connections",
    "40001": "a concurrent transaction conflicted with this one",
    "40P01": "a concurrent transaction deadlocked with this one",
}
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")


def sqlstate(exc: BaseException | None) -> str:
    """The SQLSTATE behind ``exc`` (the driver's error, through SQLAlchemy's ``orig`` and the
    ``__cause__`` of an error raised from it, as StoreUnavailable is); "" when there is none."""
    for _ in range(4):
        if exc is None:
            return ""
        state = getattr(exc, "sqlstate", None)
        if state:
            return str(state)
        exc = getattr(exc, "orig", None) or exc.__cause__
    return ""


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc``, raised by the driver or the pool, is a fault of the database and not of the
    request; None when it is not one (a constraint broken, a bad statement: a bug, a 500)."""
    if isinstance(exc, PoolTimeout):
        return f"no database connection came free within the pool timeout ({first_line(exc, 120)})"
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    state = sqlstate(orig)
    detail = first_line(orig, 200) if orig is not None else first_line(exc, 200)
    if state in _UNAVAILABLE_STATES:
        return f"{_UNAVAILABLE_STATES[state]}: {detail}"
    if state[:2] in _UNAVAILABLE_CLASSES:
        return detail
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return detail
    if state:  # any other state is the statement's own (a row too big, a limit): a bug, a 500
        return None
    if isinstance(exc, OperationalError) or (not isinstance(exc, DBAPIError) and _driver_connection_error(orig)):
        return detail  # no state: the connection itself failed (refused, reset, timed out)
    return None


def _driver_connection_error(exc: BaseException | None) -> bool:
    """A raw driver error (raised past SQLAlchemy, as a COPY's are) that is the connection's."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.OperationalError)


@contextmanager
def by_index(s: Session, dialect: str) -> Iterator[None]:
    """Inside the block, PostgreSQL reads tables by their indexes wherever one serves. The hot
    paths that count a job's history rows (ending a batch, settling a reservation) must not
    depend on the statistics of the moment: after an ANALYZE that saw one big job, the planner
    chose a sequential scan of ``history`` per ending job (minutes, not milliseconds, for a
    batch). A no-op on SQLite."""
    if dialect != "postgresql":
        yield
        return
    s.execute(text("SET LOCAL enable_seqscan = off"))
    yield  # an error aborts the transaction, and the setting with it
    s.execute(text("SET LOCAL enable_seqscan = on"))


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

    def __init__(self, url: str, timeouts: DatabaseTimeouts | None = None) -> None:
        """``timeouts`` bound every PostgreSQL connection (``Settings.database_timeouts``); without
        them, the environment's (its lease and DESCENT_DB_* variables) are used."""
        self.url = url
        self.timeouts = timeouts or (database_timeouts_from_env() if not url.startswith("sqlite")
                                     else DatabaseTimeouts())
        self.engine = make_engine(url, self.timeouts)
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
        except BaseException as exc:
            reason = unavailable_reason(exc) if isinstance(exc, Exception) else None
            try:
                session.rollback()
            except DBAPIError:
                if reason is None and not isinstance(exc, DBAPIError):
                    raise
                # the connection is gone (the pool has already dropped it), or a closed session
            if reason is not None:
                raise StoreUnavailable(f"the database is unavailable: {reason}") from exc
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

    def check_writable(self) -> None:
        """Raise StoreUnavailable unless the database takes a write now (``/readyz``): a write
        that changes nothing and leaves no row. On PostgreSQL an UPDATE of no row, refused on a
        read-only database (a standby, a failover, ``default_transaction_read_only``) with the
        lock and statement waits cut short; on SQLite a write of the schema's version row, plus a
        small file written and synced next to the database (a full disk or read-only folder fails
        it). A second try, on a fresh connection, once a stale pooled one has been dropped."""
        for attempt in range(2):
            try:
                with self.session() as s:
                    if self.dialect == "postgresql":
                        s.execute(text("SET LOCAL lock_timeout = '1s'"))
                        s.execute(text("SET LOCAL statement_timeout = '1500ms'"))
                        s.execute(text("UPDATE alembic_version SET version_num = version_num WHERE false"))
                    else:
                        s.execute(text("UPDATE alembic_version SET version_num = version_num"))
                if self.dialect == "sqlite":
                    self._write_probe_file()
                return
            except StoreUnavailable:
                if attempt == 1:
                    raise

    def _write_probe_file(self) -> None:
        """Write and sync a few kilobytes next to the SQLite file, then remove them."""
        path = self.url.split("///", 1)[-1]
        if not path or path == ":memory:":
            return
        probe = Path(path).parent / f".descent-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 16384)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise StoreUnavailable(f"the database's disk takes no write: {exc.strerror or exc}") from exc
        finally:
            try:
                probe.unlink()
            except OSError:
                pass
