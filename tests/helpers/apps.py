"""An API app built for one test, on a fresh embedded database of its own."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from service.api import create_app
from service.config import Limits
from service.store import Database
from service.store.migrate import upgrade
from testkit.backends import embedded_settings
from tests.api.conftest import RecordingDispatcher


@contextmanager
def client_with_limits(tmp_path: Path, limits: Limits) -> Iterator[Any]:
    """A test client of an app configured with ``limits`` (its broker left out); its database closed after."""
    settings = embedded_settings(tmp_path, limits=limits)
    database = Database(settings.database_url)
    upgrade(database)
    try:
        yield create_app(replace(settings, limits=limits), {"TESTING": True}, db=database,
                         dispatcher=RecordingDispatcher()).test_client()
    finally:
        database.engine.dispose()
