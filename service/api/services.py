"""What the API's handlers share: settings, the database and the task dispatcher."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from service.config import Settings
from service.queue import Dispatcher
from service.store import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    dispatcher: Dispatcher


def services() -> Services:
    return current_app.extensions["descent"]
