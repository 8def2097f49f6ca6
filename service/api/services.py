"""What the API's handlers share: settings, the database, the task dispatcher, the watcher of
finishing jobs (for ``?wait``), the count of waiting or streaming requests, the memory budget
of grid evaluations, and where big specs are admitted."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from service.api.admission import Admissions
from service.api.waiting import GridBudget, WaiterSlots
from service.config import Settings
from service.queue import Dispatcher
from service.store import Database
from service.store.events import FinishedJobs


@dataclass
class Services:
    settings: Settings
    db: Database
    dispatcher: Dispatcher
    finished: FinishedJobs
    waiters: WaiterSlots
    grids: GridBudget
    admissions: Admissions


def services() -> Services:
    return current_app.extensions["descent"]
