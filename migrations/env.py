"""Alembic environment: the URL comes from Descent's settings (or the caller's config), and
SQLite runs in batch mode so the same revisions work on both backends."""
from __future__ import annotations

from alembic import context

from service.config import load_settings
from service.store.db import make_engine
from service.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or load_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def _skip_empty(ctx, revision, directives) -> None:  # type: ignore[no-untyped-def]
    """Autogenerate writes no revision when nothing changed."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives and directives[0].upgrade_ops.is_empty():
        directives[:] = []


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = make_engine(_url())
        with engine.connect() as conn:
            _run(conn)
        engine.dispose()
    else:
        _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table by copying it and dropping the old one; with foreign keys
        # on, that drop would cascade (dropping ``jobs`` deletes every ``job_tags`` row). The
        # pragma only takes effect outside a transaction, so it is set on the driver connection
        # before Alembic begins one, and the keys are checked once the migration is done.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=sqlite,
                          process_revision_directives=_skip_empty, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")
    finally:
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
