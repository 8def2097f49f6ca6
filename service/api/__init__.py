"""The HTTP API: ``create_app()`` builds the Flask app with its blueprints."""
from __future__ import annotations

from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from service.config import Settings, load_settings
from service.jsonsafe import strict_dumps
from service.expr import warm_up
from service.queue import Dispatcher, make_celery, prepare_embedded_broker
from service.store import Database
from service.store.events import FinishedJobs
from service.store.migrate import check_schema


class StrictJSON(DefaultJSONProvider):
    """Every JSON body the API writes is valid JSON: no bare NaN or Infinity, whatever a stored
    spec or result holds."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return strict_dumps(obj, **kwargs)


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None,
               db: Database | None = None, dispatcher: Dispatcher | None = None) -> Flask:
    """Build the app. Refuses (SchemaOutOfDate) a database behind the head migration. ``db`` and
    ``dispatcher`` (tests give their own) default to those the settings name."""
    from service.api import (access, auth, catalog, dashboard, deletion, errors, events, health, history, jobs,
                             metrics, openapi, params, security, surface, sweeps, tensors, workers)
    from service.api.admission import Admissions
    from service.api.services import Services
    from service.api.waiting import GridBudget, WaiterSlots

    settings = settings or load_settings()
    app = Flask(__name__)
    app.json = StrictJSON(app)
    # an upload's spec may come as a form field as big as the body (werkzeug's default is 500 KB)
    app.config.update(MAX_CONTENT_LENGTH=settings.limits.max_body_bytes, MAX_FORM_MEMORY_SIZE=settings.limits.max_body_bytes,
                      JSON_SORT_KEYS=False)
    if test_config:
        app.config.update(test_config)
    db = db or Database(settings.database_url, settings.database_timeouts)
    check_schema(db)
    if dispatcher is None:
        dispatcher = Dispatcher(make_celery(settings))
        if settings.embedded_broker:
            prepare_embedded_broker(dispatcher.celery)
    app.extensions["descent"] = Services(settings=settings, db=db, dispatcher=dispatcher, finished=FinishedJobs(db),
                                         waiters=WaiterSlots(settings.max_waiters),
                                         grids=GridBudget(settings.limits.max_objective_bytes),
                                         admissions=Admissions(settings.admission_processes))
    access.register(app)
    errors.register(app)
    security.register(app, settings)
    app.config["DESCENT_AUTH"] = auth.register(app, settings, db)
    params.register(app)
    for module in (jobs, events, history, surface, tensors, catalog, health, openapi, sweeps, deletion, workers, metrics,
                   dashboard):
        app.register_blueprint(module.bp)
    warm_up()
    return app
