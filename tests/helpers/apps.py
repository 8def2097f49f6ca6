"""An API app built for one test, on a fresh embedded database of its own."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from service.api import create_app
from service.queue import Dispatcher
from testkit.backends import embedded_settings, migrated_database


@contextmanager
def embedded_client(tmp_path: Path, dispatcher: Dispatcher | None = None, **overrides: Any) -> Iterator[Any]:
    """A test client of the API on a migrated embedded database, its settings as ``overrides`` say
    and its broker ``dispatcher`` (None: the one the settings name); the database closed after."""
    settings = embedded_settings(tmp_path, **overrides)
    db = migrated_database(settings.database_url)
    try:
        yield create_app(settings, {"TESTING": True}, db=db, dispatcher=dispatcher).test_client()
    finally:
        db.engine.dispose()
