"""The HTTP API: ``create_app()`` builds the Flask app with its blueprints."""
from __future__ import annotations

from typing import Any

from flask import Flask

from service.config import Settings, load_settings
from service.expr import warm_up
from service.queue import Dispatcher, make_celery, prepare_embedded_broker
from service.store import Database
from service.store.events import FinishedJobs
from service.store.migrate import check_schema


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None,
               db: Database | None = None) -> Flask:
    """Build the app. Refuses (SchemaOutOfDate) a database behind the head migration."""
    from service.api import auth, catalog, errors, health, history, jobs, openapi, security
    from service.api.services import Services

    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.limits.max_body_bytes, JSON_SORT_KEYS=False)
    if test_config:
        app.config.update(test_config)
    db = db or Database(settings.database_url)
    check_schema(db)
    dispatcher = Dispatcher(make_celery(settings))
    if settings.embedded_broker:
        prepare_embedded_broker(dispatcher.celery)
    app.extensions["descent"] = Services(settings=settings, db=db, dispatcher=dispatcher, finished=FinishedJobs(db))
    app.json.sort_keys = False
    errors.register(app)
    security.register(app, settings)
    app.config["DESCENT_AUTH"] = auth.register(app, settings, db)
    for module in (jobs, history, catalog, health, openapi):
        app.register_blueprint(module.bp)
    warm_up()
    return app
