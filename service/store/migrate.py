"""Schema migrations (Alembic, in ``migrations/``) and the start-up check that refuses a
database whose schema is not this code's head revision."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.store.db import Database, StoreError

UPGRADE_COMMAND = "descent db upgrade"


def _migrations_dir() -> Path:
    """The Alembic folder (env.py, alembic.ini, versions/), found from this file, not the cwd or
    sys.prefix: a wheel installs the top-level ``migrations/`` as ``service/migrations``; a source
    checkout (editable install) has no such folder, and its ``migrations/`` is beside ``service/``."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "migrations"
    return installed if installed.is_dir() else package.parent / "migrations"


MIGRATIONS = _migrations_dir()


class SchemaOutOfDate(StoreError):
    """The database schema is not at this code's head revision."""


class SchemaNewerThanCode(SchemaOutOfDate):
    """The database is at a revision this code does not know: a newer Descent migrated it, so
    upgrading the database cannot help; upgrading Descent can."""


def alembic_config(url: str) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.attributes["url"] = url
    return cfg


def _scripts(db: Database) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(db.url))


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``. On SQLite the first upgrade also creates the file.
    Refuses (SchemaNewerThanCode) a database a newer Descent migrated, rather than let Alembic
    fail on a revision it cannot locate."""
    _refuse_newer(current_revision(db), _scripts(db))
    cfg = alembic_config(db.url)
    with db.engine.connect() as conn:  # migrations/env.py begins (and commits) the transaction
        if db.dialect == "postgresql":
            # A migration may rewrite a big table and wait for the fleet's row locks: the bounds
            # of ordinary sessions (service.store.db) do not apply to it.
            conn.exec_driver_sql("SET statement_timeout = 0")
            conn.exec_driver_sql("SET lock_timeout = 0")
            conn.commit()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    if db.dialect == "sqlite":
        # The migration turned foreign keys off on its connection (migrations/env.py), and the
        # pragma that turns them on again is lost inside a transaction: new connections, each
        # set up by service.store.db with foreign keys on, so deletes cascade.
        db.engine.dispose()


def head_revision(db: Database) -> str | None:
    return _scripts(db).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _refuse_newer(current: str | None, scripts: ScriptDirectory) -> None:
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        raise SchemaNewerThanCode(
            f"the database is at revision {current}, which this version of Descent does not know "
            f"(it is newer; this version's newest is {scripts.get_current_head()}): upgrade Descent"
        )


def check_schema(db: Database) -> None:
    """Unless the schema is at head, raise SchemaOutOfDate naming the upgrade command (database
    behind this code), or SchemaNewerThanCode saying to upgrade Descent (database ahead of it)."""
    current, scripts = current_revision(db), _scripts(db)
    _refuse_newer(current, scripts)
    head = scripts.get_current_head()
    if current != head:
        where = "has no Descent schema" if current is None else f"is at revision {current}"
        raise SchemaOutOfDate(
            f"the database {where}, but this version of Descent needs revision {head}; "
            f"run `{UPGRADE_COMMAND}` (with the same DESCENT_DATABASE_URL) first"
        )
