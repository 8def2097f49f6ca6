"""The Celery app (one per process) and its settings, shared by the API (which only sends
tasks, by name) and the workers.

Production uses Redis; embedded runs use kombu's SQLAlchemy transport on a SQLite file, which
needs no server process. (The ``filesystem://`` transport was ruled out: its reader can decode
a half-written message and crash the worker, kombu #1551.)
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from celery import Celery

from service.config import Settings

RUN_JOB_TASK = "descent.run_job"
RUN_JOBS_TASK = "descent.run_jobs"
EMBEDDED_POLL_SECONDS = 0.02
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """What one task message asks a worker to run: one job, or jobs of one batch key (claimed
    together, with more of the same key while the batch has room)."""

    job_ids: list[str]
    queue: str


def messages_for(jobs: Iterable[tuple[str, str, str | None]], per_message: int) -> list[Message]:
    """Messages for new (job id, queue, batch key) jobs: jobs of one key and queue share messages
    of up to ``per_message`` ids (a worker's batch), every other job has one of its own."""
    out: list[Message] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for job_id, queue, key in jobs:
        if key is None or per_message <= 1:
            out.append(Message([job_id], queue))
        else:
            groups.setdefault((queue, key), []).append(job_id)
    for (queue, _), ids in groups.items():
        out.extend(Message(ids[i:i + per_message], queue) for i in range(0, len(ids), per_message))
    return out


def configure_embedded_transport() -> None:
    """kombu hands ``broker_transport_options`` straight to ``create_engine`` for this transport
    (kombu #2157), so its polling interval is set on the transport class instead."""
    from kombu.transport import sqlalchemy as sqla

    sqla.Transport.polling_interval = EMBEDDED_POLL_SECONDS


QUEUES = ("cpu", "gpu")  # the broker's queues: a job's queue is one of them


def prepare_embedded_broker(celery: Celery, queues: tuple[str, ...] = QUEUES) -> None:
    """Create the SQL broker's tables and queue rows before anything consumes or publishes.
    kombu creates them on first use by check-then-insert, so two processes starting together
    on a fresh broker file can both insert, and the loser dies with a UNIQUE (or "table already
    exists") error. Here the loser retries and finds the winner's rows."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    url = celery.conf.broker_url or ""
    if url.startswith("sqla+sqlite:///"):  # its folder may not exist yet (a server database, say)
        Path(url.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(20):
        try:
            with celery.connection_for_write() as conn:
                for name in queues:
                    conn.default_channel.queue_declare(name)
            return
        except (IntegrityError, OperationalError):
            if attempt == 19:
                raise
            time.sleep(0.05 * (attempt + 1))


def purge_consumed(celery: Celery) -> int:
    """On the embedded SQL broker, delete the messages already delivered: kombu keeps each one
    (``visible = false``) forever, and the broker file would grow by every job ever sent. A
    delivered message that is not acknowledged is put back as a new row, so none is lost.
    Returns how many went (0 on any other broker)."""
    if not (celery.conf.broker_url or "").startswith("sqla+"):
        return 0
    with celery.connection_for_write() as conn:
        channel = conn.default_channel
        session, message = channel.session, channel.message_cls
        gone = session.query(message).filter(message.visible.is_(False)).delete(synchronize_session=False)
        session.commit()
    return int(gone or 0)


def waiting_messages(celery: Celery, queue: str) -> int:
    """Messages waiting in ``queue`` (not yet delivered to a worker); 0 for a queue the broker
    does not have (a Redis flushed or restarted empty keeps no queue)."""
    from kombu.exceptions import ChannelError

    with celery.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
        except ChannelError:
            return 0


def celery_config(settings: Settings) -> dict[str, Any]:
    if settings.embedded_broker:
        configure_embedded_transport()
        transport_options: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        # Above the longest job, so Redis never re-delivers a task that is still running.
        transport_options = {"visibility_timeout": int(settings.task_time_limit + 600)}
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "worker_hijack_root_logger": False,
        "broker_pool_limit": 4,
    }


def make_celery(settings: Settings) -> Celery:
    """The process's one Celery app: the API builds it in ``create_app``, a worker in
    ``workers.app.get_app``; both send through a ``Dispatcher`` wrapping it."""
    celery = Celery("descent")
    celery.conf.update(celery_config(settings))
    return celery


class Dispatcher:
    """Sends job tasks by name on the process's Celery app; never imports the workers package."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, job_id: str, queue: str) -> bool:
        """Enqueue the job; False (logged) if the broker is unreachable: the job stays queued in
        the database and the reconciler sends it later."""
        return self.send_message(Message([job_id], queue))

    def send_message(self, message: Message) -> bool:
        """Enqueue one message (one job, or jobs of one batch key that a worker claims together);
        False (logged) if the broker is unreachable, as ``send``."""
        ids = message.job_ids
        task, args = (RUN_JOB_TASK, [ids[0]]) if len(ids) == 1 else (RUN_JOBS_TASK, [ids])
        try:
            self.celery.send_task(task, args=args, queue=message.queue, retry=True,
                                  retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2})
            return True
        except Exception as exc:  # noqa: BLE001 - any broker failure leaves the jobs for the reconciler
            log.warning("could not enqueue %d job(s) (%s...) on %s: %s", len(ids), ids[0], message.queue, exc)
            return False

    def send_all(self, messages: list[Message]) -> int:
        """Send messages in order, stopping at the first the broker refuses (the reconciler sends
        the rest: their jobs stay queued in the database); returns how many went."""
        for sent, message in enumerate(messages):
            if not self.send_message(message):
                return sent
        return len(messages)

    def send_all_in_background(self, messages: list[Message]) -> threading.Thread:
        """``send_all`` on a thread of its own, so a request that made thousands of jobs answers
        before their messages are all sent (about 0.3 ms each on Redis, 2 ms on the SQL broker). If
        this process dies first, the reconciler sends what is left."""
        thread = threading.Thread(target=self.send_all, args=(messages,), name="descent-dispatch", daemon=True)
        thread.start()
        return thread

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
