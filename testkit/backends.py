"""Backends for tests and benchmarks: embedded settings under a folder, fresh PostgreSQL
databases, a Redis database of one's own (on a redis-server of the process's own), and the
environment that hands settings to a child."""
from __future__ import annotations

import atexit
import functools
import hashlib
import itertools
import os
import shutil
import tempfile
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterator

from service.config import Settings, load_settings


class PostgresUnreachable(RuntimeError):
    pass


PG_ADMIN_URL = os.environ.get("DESCENT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# A Redis server to use instead of a private one per test process (nothing there is flushed).
REDIS_URL = os.environ.get("DESCENT_TEST_REDIS_URL") or None


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Embedded settings (SQLite + SQL broker) under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        os.environ["DESCENT_DATA_DIR"] = str(data_dir)
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return replace(settings, **overrides)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make a child process load the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    env.update({
        "DESCENT_DATA_DIR": str(settings.data_dir),
        "DESCENT_DATABASE_URL": settings.database_url,
        "DESCENT_BROKER_URL": settings.broker_url,
        "DESCENT_LEASE_SECONDS": str(settings.lease_seconds),
        "DESCENT_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "DESCENT_MAX_ATTEMPTS": str(settings.max_attempts),
        "DESCENT_REQUEUE_AFTER": str(settings.requeue_after),
        "DESCENT_API_THREADS": str(settings.api_threads),
        "DESCENT_MAX_WAITERS": str(settings.max_waiters),
        "DESCENT_BATCH_MAX": str(settings.batch_max),
        "DESCENT_TORCH_THREADS": str(settings.torch_threads),
        "DESCENT_LOG_FORMAT": settings.log_format,
        "DESCENT_WORKER_LOST_AFTER": str(settings.worker_lost_after),
        "DESCENT_GPU_WAIT_SECONDS": str(settings.gpu_wait_seconds),
        "DESCENT_GPU_WITHOUT_CUDA": settings.gpu_without_cuda,
    })
    for name, value in (("DESCENT_AUTH", settings.auth), ("DESCENT_ALLOWED_HOSTS", settings.allowed_hosts),
                        ("DESCENT_ALLOWED_ORIGINS", settings.allowed_origins)):
        if value:
            env[name] = value
    for name, retention in (("DESCENT_HISTORY_RETENTION_SECONDS", settings.history_retention),
                            ("DESCENT_JOB_RETENTION_SECONDS", settings.job_retention)):
        if retention is not None:
            env[name] = str(retention)
    env["DESCENT_RETENTION_INTERVAL_SECONDS"] = str(settings.retention_interval)
    for group in (settings.limits, settings.quotas):
        for f in fields(group):
            if "env" in f.metadata:
                env[f.metadata["env"]] = str(getattr(group, f.name))
    return env


def pg_database(template: str | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database (a copy of ``template`` when given), dropped afterwards;
    PostgresUnreachable without a server."""
    import sqlalchemy as sa

    from service.config import normalise_database_url

    admin = sa.create_engine(normalise_database_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 5})
    name = f"descent_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = admin.connect()
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise PostgresUnreachable(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (DESCENT_TEST_PG_URL): "
                                  f"{str(exc.orig).strip()[:200]}") from None
    with conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    base = normalise_database_url(PG_ADMIN_URL).rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
                {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


# Migrated templates, one per backend and test process: a test's migrated database is a copy
# (a file copy on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL), not a run of every
# migration. Keyed by the migrations' text, so a changed migration makes a new template.
_TEMPLATES: dict[str, str] = {}
_TEMPLATE_DIR = Path(tempfile.mkdtemp(prefix="descent-templates-"))
atexit.register(shutil.rmtree, _TEMPLATE_DIR, True)


@functools.cache
def _migrations_digest() -> str:
    root = Path(__file__).resolve().parents[1] / "migrations"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _sqlite_template() -> Path:
    """This process's migrated SQLite file."""
    from service.store import Database
    from service.store.migrate import upgrade

    key = f"sqlite-{_migrations_digest()}"
    if key not in _TEMPLATES:
        path = _TEMPLATE_DIR / f"{key}.db"
        database = Database(f"sqlite:///{path}")
        upgrade(database)
        database.engine.dispose()  # the last connection closed: the WAL is folded into the file
        _TEMPLATES[key] = str(path)
    return Path(_TEMPLATES[key])


def _pg_template() -> str:
    """This process's migrated PostgreSQL database, dropped when the process ends."""
    from service.store import Database
    from service.store.migrate import upgrade

    key = f"postgresql-{_migrations_digest()}"
    if key not in _TEMPLATES:
        made = pg_database()
        url = next(made)
        database = Database(url)
        upgrade(database)
        database.engine.dispose()  # CREATE DATABASE ... TEMPLATE needs it unused
        atexit.register(made.close)
        _TEMPLATES[key] = url.rsplit("/", 1)[1]
    return _TEMPLATES[key]


def migrate_from_template(url: str) -> bool:
    """Make the SQLite database at ``url`` (a file that does not exist yet) a migrated one by
    copying this process's template; False when ``url`` is not such a file (migrate it instead)."""
    if not url.startswith("sqlite:///"):
        return False
    path = Path(url[len("sqlite:///"):])
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    template = _sqlite_template()
    shutil.copyfile(template, path)
    for suffix in ("-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            shutil.copyfile(f"{template}{suffix}", f"{path}{suffix}")
    return True


def migrated_database(url: str) -> Any:
    """A Database at ``url``, migrated: a new SQLite file is a copy of the template."""
    from service.store import Database
    from service.store.migrate import upgrade

    copied = migrate_from_template(url)
    database = Database(url)
    if not copied:
        upgrade(database)
    return database


# Migrated PostgreSQL databases of this process that a test has finished with, emptied, ready for
# the next: (url, the generator that drops it). A copy of the template costs about a second;
# emptying one a few milliseconds (a DELETE of each small table, a TRUNCATE of a big one).
_SPARE_PG: list[tuple[str, Iterator[str]]] = []
atexit.register(lambda: [made.close() for _, made in _SPARE_PG])
# Past this many rows a table is truncated (its files replaced) rather than deleted row by row.
_TRUNCATE_FROM_ROWS = 5_000


def _emptied(url: str) -> bool:
    """Empty the migrated PostgreSQL database at ``url`` for the next test, on one connection: its
    other sessions ended, every table but ``alembic_version`` emptied and every sequence restarted,
    database settings reset. False (drop it instead) when the test left its schema other than the
    template's (a downgrade, a table)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" RESET ALL'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            version = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            tables = sorted(conn.scalars(sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")))
            if (version, tables) != _pg_template_shape():
                return False
            # A TRUNCATE replaces each table's files (tens of milliseconds for them all); a DELETE of
            # a few rows takes well under one. Big tables are truncated, the rest deleted from.
            counts = conn.execute(sa.text("SELECT " + ", ".join(
                f'(SELECT count(*) FROM (SELECT 1 FROM "{t}" LIMIT {_TRUNCATE_FROM_ROWS}) AS s)' for t in tables))).one()
            big = [t for t, n in zip(tables, counts) if n >= _TRUNCATE_FROM_ROWS]
            if big:
                conn.execute(sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in big) + " CASCADE"))
            # The foreign keys' triggers off, for this session alone (it ends here): any order will do.
            conn.execute(sa.text("SET session_replication_role = replica"))
            for table, rows in zip(tables, counts):
                if rows and table not in big:
                    conn.execute(sa.text(f'DELETE FROM "{table}"'))
            for sequence in conn.scalars(sa.text(
                    "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = 'public'")):
                conn.execute(sa.text(f'ALTER SEQUENCE "{sequence}" RESTART'))
        return True
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


@functools.cache
def _pg_template_shape() -> tuple[str, list[str]]:
    """(revision, tables) of this process's template."""
    import sqlalchemy as sa

    url = normalise_pg_url().rsplit("/", 1)[0] + "/" + _pg_template()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return (conn.scalar(sa.text("SELECT version_num FROM alembic_version")), sorted(conn.scalars(sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))))
    finally:
        engine.dispose()


def normalise_pg_url() -> str:
    from service.config import normalise_database_url

    return normalise_database_url(PG_ADMIN_URL)


def migrated(url: str | None = None) -> Iterator[Any]:
    """A migrated Database at ``url``, or on an empty migrated PostgreSQL database of its own
    when None (one a finished test left, emptied, or a fresh copy of the template); disposed after."""
    from service.store import Database

    if url is not None:
        database = migrated_database(url)
        try:
            yield database
        finally:
            database.engine.dispose()
        return
    _pg_template_shape()  # before the first test changes anything
    if _SPARE_PG:
        pg_url, made = _SPARE_PG.pop()
    else:
        made = pg_database(_pg_template())
        pg_url = next(made)
    database = Database(pg_url)
    try:
        yield database
    finally:
        database.engine.dispose()
        if _emptied(pg_url):
            _SPARE_PG.append((pg_url, made))
        else:
            made.close()


# This process's private redis-server (started on first use) and the databases it has handed out.
_PRIVATE_REDIS: list[Any] = []
_REDIS_USES = itertools.count()
REDIS_DATABASES = 1000  # the private server's; each use takes the next, so none is shared in a run


def private_redis() -> Any:
    """This process's own redis-server (``testkit.servers.PrivateRedis``, keeping nothing on disk),
    started on a free port on first use and stopped when the process ends; one per pytest-xdist
    worker, so the tests' Redis databases are never the machine's shared server's."""
    from testkit.servers import PrivateRedis

    if not _PRIVATE_REDIS:
        server = PrivateRedis(databases=REDIS_DATABASES)
        server.start()
        atexit.register(server.close)
        _PRIVATE_REDIS.append(server)
    return _PRIVATE_REDIS[0]


def redis_is_own(url: str) -> bool:
    """Whether ``url`` is a database of this process's private server (one a test may flush)."""
    return bool(_PRIVATE_REDIS) and url.startswith(f"redis://127.0.0.1:{_PRIVATE_REDIS[0].port}/")


def redis_url_for_test() -> str:
    """An empty Redis database for the caller alone. By default the next database of this process's
    private server (``private_redis``), flushed when taken: the server is the test's own. With
    DESCENT_TEST_REDIS_URL (a server others may use) a database there that holds no key, which
    nothing here ever flushes; RuntimeError when none is empty."""
    import redis

    if REDIS_URL is None:
        server = private_redis()
        index = next(_REDIS_USES) % REDIS_DATABASES
        url = f"redis://127.0.0.1:{server.port}/{index}"
        redis.Redis.from_url(url).flushdb()
        return url
    base = REDIS_URL.rstrip("/")
    for index in range(1, 16):
        client = redis.Redis.from_url(f"{base}/{index}", socket_connect_timeout=5)
        try:
            # Claimed by a key of its own, set only where the database is empty: two test
            # processes never take one database, and a database someone uses is left alone.
            if client.dbsize() == 0 and client.set("descent-test:claimed", os.getpid(), nx=True) and \
                    client.dbsize() == 1:
                return f"{base}/{index}"
        finally:
            client.close()
    raise RuntimeError(f"no empty database on {REDIS_URL} (DESCENT_TEST_REDIS_URL): tests never flush a server "
                       "they did not start; unset it to have them start their own")
