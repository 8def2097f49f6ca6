"""Waiting for a job to finish: every waiter of a process parked on one watcher, none polling.

A waiting request registers an event and sleeps on it; it reads the job only when it starts and
when it is woken. Two things wake it. On PostgreSQL a trigger (migration 0002) sends
``NOTIFY descent_job_finished, '<job id>'`` in the transaction that finishes a job, and one
listener thread per process, on a connection of its own, wakes that job's waiters at once. And
one poller thread per process asks, in a single query, which of all the jobs being waited on have
finished: every ``safety_poll`` seconds while the listener is up (a notification lost while it
reconnects costs latency, never a wrong answer), every ``poll`` seconds on SQLite (which has no
such channel) or while the listener is down. So 200 waiters cost one query per poll, not 200.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from service.store.db import Database
from service.store.jobs import finished_among, get_job
from service.store.records import JobRecord

CHANNEL = "descent_job_finished"
log = logging.getLogger(__name__)


class FinishedJobs:
    """``wait(job_id, seconds)``: the job once it has finished, or when the time is up."""

    def __init__(self, db: Database, safety_poll: float = 1.0, poll: float = 0.05) -> None:
        self.db = db
        self.safety_poll, self.poll = safety_poll, poll
        self._lock = threading.Lock()
        self._waiters: dict[str, list[threading.Event]] = defaultdict(list)
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poller: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def wait(self, job_id: str, seconds: float) -> JobRecord:
        """The job once it has finished, or as it is when ``seconds`` are up; NotFound for an
        unknown job."""
        self._ensure_listener()
        self._ensure_poller()
        event = threading.Event()
        with self._lock:
            self._waiters[job_id].append(event)
        try:
            deadline = time.monotonic() + seconds
            job = get_job(self.db, job_id)  # read after registering: no wake-up is missed
            while not job.finished:
                left = deadline - time.monotonic()
                if left <= 0 or not event.wait(left):
                    return get_job(self.db, job_id) if left > 0 else job
                event.clear()
                job = get_job(self.db, job_id)
            return job
        finally:
            with self._lock:
                events = self._waiters.get(job_id, [])
                if event in events:
                    events.remove(event)
                if not events:
                    self._waiters.pop(job_id, None)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            for event in self._waiters.get(job_id, ()):
                event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

    def _ensure_poller(self) -> None:
        if self._poller is not None and self._poller.is_alive():
            return
        with self._lock:
            if self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(target=self._poll_forever, name="descent-waiters", daemon=True)
                self._poller.start()

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.safety_poll if self._listening.is_set() else self.poll):
            with self._lock:
                waited = list(self._waiters)
            if not waited:
                continue
            try:
                for job_id in finished_among(self.db, waited):
                    self._wake(job_id)
            except Exception as exc:  # noqa: BLE001 - the poller must outlive any one failure
                log.warning("could not check the jobs being waited on (%s); trying again", exc)

    def _ensure_listener(self) -> None:
        if self._thread is not None or self.db.dialect != "postgresql":
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen_forever, name="descent-finished-jobs",
                                                daemon=True)
                self._thread.start()

    def _listen_forever(self) -> None:
        import psycopg

        delay = 0.5
        while not self._stop.is_set():
            try:
                cargs, cparams = self.db.engine.dialect.create_connect_args(self.db.engine.url)
                with psycopg.connect(*cargs, **{"connect_timeout": 5, **cparams, "autocommit": True}) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._wake_all()  # anything that finished before LISTEN: re-read now
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._wake(note.payload)
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any one failure
                if self._listening.is_set() or not isinstance(exc, psycopg.Error):
                    log.warning("job-finished listener stopped (%s); polling until it is back", exc)
            finally:
                self._listening.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._poller):
            if thread is not None:
                thread.join(timeout=3)
