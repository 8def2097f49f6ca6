"""Schema migrations (Alembic, in ``migrations/``) and the start-up check that refuses a
database behind the head revision."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.store.db import Database, StoreError

ROOT = Path(__file__).resolve().parents[2]
UPGRADE_COMMAND = "descent db upgrade"


class SchemaOutOfDate(StoreError):
    pass


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``. On SQLite the first upgrade also creates the file."""
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def head_revision(db: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(db.url)).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema(db: Database) -> None:
    """Raise SchemaOutOfDate, naming the upgrade command, unless the schema is at head."""
    current, head = current_revision(db), head_revision(db)
    if current != head:
        where = "has no Descent schema" if current is None else f"is at revision {current}"
        raise SchemaOutOfDate(
            f"the database {where}, but this version of Descent needs revision {head}; "
            f"run `{UPGRADE_COMMAND}` (with the same DESCENT_DATABASE_URL) first"
        )
