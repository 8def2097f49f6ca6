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
# How long a submit waits for the broker to take its job's message: past it the request answers
# anyway (the job is stored, queued) and the reconciler sends the message later.
SEND_WAIT_SECONDS = 1.0
# Sends in flight at once that a caller waits on (the producer pool's size, broker_pool_limit).
SENDS_IN_FLIGHT = 4
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
        # Every socket is bounded: a Redis that drops packets (rather than refusing connections)
        # fails a connect or a command within DESCENT_BROKER_TIMEOUT instead of hanging until the
        # kernel gives up; keepalives and kombu's health checks find a half-open consumer
        # connection (its BRPOP) within about brpop_timeout + 2 x health_check_interval.
        timeout = settings.broker_timeout
        transport_options = {"visibility_timeout": int(settings.task_time_limit + 600),
                             "socket_timeout": timeout, "socket_connect_timeout": timeout,
                             "socket_keepalive": True, "health_check_interval": max(1, int(round(2 * timeout)))}
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_timeout": settings.broker_timeout,
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

    def __init__(self, celery: Celery, send_wait: float = SEND_WAIT_SECONDS) -> None:
        self.celery = celery
        self.send_wait = send_wait
        self._in_flight = threading.BoundedSemaphore(SENDS_IN_FLIGHT)

    def send(self, job_id: str, queue: str, wait: float | None = None) -> bool:
        """Enqueue the job, waiting at most ``wait`` seconds (default ``send_wait``, about a
        second) for the broker; False (logged) if it is unreachable or has not answered by then:
        the job stays queued in the database and the reconciler sends it later. A send still
        under way goes on in the background (a second message for one job is harmless: a worker
        claims a job once)."""
        return self.send_within(Message([job_id], queue), self.send_wait if wait is None else wait)

    def send_within(self, message: Message, seconds: float) -> bool:
        """``send_message`` on a thread of its own, waited on for at most ``seconds``: a broker
        that drops packets never holds the caller (a request) longer. At most SENDS_IN_FLIGHT
        such sends are under way at once; past them the message is left to the reconciler."""
        deadline = time.monotonic() + seconds
        if not self._in_flight.acquire(timeout=seconds):
            log.warning("could not enqueue %d job(s) (%s...) on %s: the broker has not answered earlier sends; "
                        "the reconciler sends them", len(message.job_ids), message.job_ids[0], message.queue)
            return False
        done = threading.Event()
        outcome = [False]

        def go() -> None:
            try:
                outcome[0] = self.send_message(message)
            finally:
                self._in_flight.release()
                done.set()

        threading.Thread(target=go, name="descent-send", daemon=True).start()
        if done.wait(max(0.0, deadline - time.monotonic())):
            return outcome[0]
        log.warning("could not enqueue %d job(s) (%s...) on %s: the broker did not answer within %g s; they stay "
                    "queued and the reconciler sends them", len(message.job_ids), message.job_ids[0], message.queue,
                    seconds)
        return False

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

    def ping(self, timeout: float = 2.0) -> None:
        """Raise if the broker cannot be reached or does not answer a round trip (a Redis PING:
        an open socket to a Redis that drops packets is not an answer). Callers that must answer
        in time (``/readyz``) run it on a thread of their own: a connect may take up to
        DESCENT_BROKER_TIMEOUT."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            client = getattr(conn.default_channel, "client", None)
            if client is not None and callable(getattr(client, "ping", None)):
                client.ping()
