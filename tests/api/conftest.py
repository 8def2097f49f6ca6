"""API fixtures: the app on SQLite with a dispatcher that keeps the messages it would send, so an
app costs no broker (the SQL broker's file and tables took tens of milliseconds of every API
test); a test marked ``broker`` gets the embedded SQL broker the service runs with. Sending
through real brokers is tested by tests/workers, tests/integration and tests/faults.

Their runs on PostgreSQL are ``slow``: ``make test-fast`` runs the API on SQLite and PostgreSQL's
SQL in tests/store, ``make test`` runs the API on both."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, cast

import pytest
from flask import Flask

from service.api import create_app
from service.config import Quotas
from service.queue import Dispatcher, Message
from service.store import Database, tokens
from testkit.backends import embedded_settings
from tests.conftest import embedded_app
from tests.helpers.users import User


class RecordingDispatcher(Dispatcher):
    """The API's dispatcher (its threads, waits and order) with the broker left out: each message
    goes to ``sent``, and the broker always answers."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None))
        self.sent: list[Message] = []

    def send_message(self, message: Message) -> bool:
        self.sent.append(message)
        return True

    def ping(self, timeout: float = 2.0) -> None:
        return None


def dispatcher_for(request: pytest.FixtureRequest) -> Dispatcher | None:
    """A RecordingDispatcher, or None (the settings' broker) for a test marked ``broker``."""
    return None if request.node.get_closest_marker("broker") else RecordingDispatcher()


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """The API on SQLite, sending no message (``app.extensions["descent"].dispatcher.sent``)."""
    yield from embedded_app(tmp_path, dispatcher_for(request))


@pytest.fixture
def guarded(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """The API with DESCENT_AUTH=required on SQLite, sending no message: (test client, database)."""
    for application in embedded_app(tmp_path, dispatcher_for(request), auth="required"):
        yield application.test_client(), application.extensions["descent"].db


HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.params.values() and HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def auth_api(db: Database, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., tuple[Flask, Callable[..., User]]]:
    """An auth-required API on each backend: ``auth_api(quotas)`` gives the app and ``user(owner,
    admin=False)``, a User with a new token of that owner."""
    def make(quotas: Quotas | None = None) -> tuple[Flask, Callable[..., User]]:
        settings = embedded_settings(tmp_path, auth="required", database_url=db.url, quotas=quotas or Quotas())
        app = create_app(settings, {"TESTING": True}, db=db, dispatcher=dispatcher_for(request))
        client = app.test_client()
        return app, lambda owner, admin=False: User(client, tokens.create_token(db, owner, admin)[1])
    return make
