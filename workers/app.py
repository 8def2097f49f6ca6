"""The Celery app: ``celery -A workers.app worker -Q cpu`` (or ``descent worker``) runs it.

The app is built once per process, from settings, when Celery first asks for ``workers.app.app``
(a module ``__getattr__``), never at import time. The worker's start-up (``worker_init``) builds
the process's one ``WorkerState``, with a dispatcher on this app (``workers.state.start``); the
fleet threads, started once the worker is ready, and the tasks use it.

Workers use the solo pool: each worker process runs one job at a time in its own main thread,
so CUDA is never initialised in a forked parent and SIGTERM reaches the running job. Scale by
starting more worker processes.
"""
from __future__ import annotations

import logging
import os
import sys

from celery import Celery, signals

from service.config import load_settings
from service.queue import Dispatcher, make_celery, prepare_embedded_broker

log = logging.getLogger("workers")
_app: Celery | None = None


def get_app() -> Celery:
    """This worker process's one Celery app (built on first use)."""
    global _app
    if _app is None:
        _app = make_celery(load_settings())
        _app.conf.update(worker_pool="solo", worker_concurrency=1, include=["workers.tasks"])
    return _app


def __getattr__(name: str) -> Celery:
    if name == "app":
        return get_app()
    raise AttributeError(name)


def _queues_of(sender: object) -> list[str]:
    """The queues this worker consumes: set by ``descent worker``, else read from Celery's -Q."""
    names = load_settings().worker_queues
    if names:
        return names.split(",")
    amqp = getattr(getattr(sender, "app", None), "amqp", None)
    try:
        return sorted(q.name for q in amqp.queues.consume_from.values())  # type: ignore[union-attr]
    except AttributeError:
        return ["cpu"]


def _refuse(message: str, code: int) -> None:
    sys.stderr.write(f"descent worker: {message}\n")
    sys.stderr.flush()
    os._exit(code)


@signals.setup_logging.connect
def _setup_logging(loglevel: object = None, **_: object) -> None:
    """Descent's log lines (``service.logs``) instead of Celery's: text or JSON, with job ids."""
    from service import logs

    try:
        logs.configure(load_settings().log_format, loglevel if isinstance(loglevel, (int, str)) and loglevel
                       else logging.INFO)
    except Exception as exc:  # noqa: BLE001 - a bad DESCENT_LOG_FORMAT stops the worker with one line
        _refuse(str(exc), 78)


@signals.worker_init.connect
def _worker_init(sender: object = None, **_: object) -> None:
    """Refuse to start on a database behind the head migration, or on the gpu queue without CUDA;
    create the embedded broker's queues before consuming from them; then build this process's one
    ``WorkerState`` (its dispatcher sends on this app)."""
    from service.store import Database
    from service.store.migrate import SchemaOutOfDate, check_schema
    from workers import state

    queues = _queues_of(sender)
    os.environ["DESCENT_WORKER_QUEUES"] = ",".join(queues)
    settings = load_settings()
    db = Database(settings.database_url)
    try:
        check_schema(db)
    except SchemaOutOfDate as exc:
        _refuse(str(exc), 78)
    except Exception as exc:  # noqa: BLE001 - an unreachable database is retried later, not fatal
        log.warning("could not check the database schema at start-up: %s", exc)
    finally:
        db.engine.dispose()
    if settings.embedded_broker:
        prepare_embedded_broker(get_app())
    import torch

    # One job per worker process: one intra-op thread each unless told otherwise.
    torch.set_num_threads(settings.torch_threads)
    if "gpu" in queues and not settings.gpu_on_cpu:
        if not torch.cuda.is_available():
            _refuse("refusing to start on the 'gpu' queue: this machine has no CUDA device "
                    "(torch.cuda.is_available() is False). Run it with --queues cpu instead.", 78)
    state.start(settings, queues, Dispatcher(get_app()))


@signals.worker_ready.connect
def _start_fleet(**_: object) -> None:
    from workers.fleet import start_background
    from workers.state import get_state

    start_background(get_state())


@signals.worker_shutting_down.connect
def _hand_back(**_: object) -> None:
    from workers.state import get_state

    try:
        get_state().shutting_down.set()
    except RuntimeError:  # stopped before its start-up built a state: nothing runs to hand back
        pass


@signals.worker_shutdown.connect
def _leave_fleet(**_: object) -> None:
    from workers.fleet import leave
    from workers.state import get_state

    try:
        state = get_state()
    except RuntimeError:  # stopped before its start-up built a state: it never joined the fleet
        return
    leave(state)
