"""Waiting for a job to finish without polling the database in a tight loop.

On PostgreSQL a trigger (migration 0002) sends ``NOTIFY descent_job_finished, '<job id>'`` in
the transaction that finishes a job; one listener thread per process, on a connection of its
own, wakes the requests waiting for that job. The database stays the source of truth: a waiter
re-reads the job when woken, and every ``safety_poll`` seconds anyway, so a notification
lost while the listener reconnects costs latency, never a wrong answer. SQLite has no such
channel: there waiters poll (a local file read).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from service.store.db import Database
from service.store.jobs import get_job
from service.store.records import JobRecord

CHANNEL = "descent_job_finished"
log = logging.getLogger(__name__)


class FinishedJobs:
    """``wait(job_id, seconds)``: the job once it has finished, or when the time is up."""

    def __init__(self, db: Database, safety_poll: float = 1.0) -> None:
        self.db = db
        self.safety_poll = safety_poll
        self._lock = threading.Lock()
        self._waiters: dict[str, list[threading.Event]] = defaultdict(list)
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def wait(self, job_id: str, seconds: float) -> JobRecord:
        """The job once it has finished, or as it is when ``seconds`` are up; NotFound for an
        unknown job."""
        self._ensure_listener()
        event = threading.Event()
        with self._lock:
            self._waiters[job_id].append(event)
        try:
            began = time.monotonic()
            job = get_job(self.db, job_id)  # read after registering: no wake-up is missed
            while not job.finished:
                left = seconds - (time.monotonic() - began)
                if left <= 0:
                    break
                event.wait(min(left, self._poll_interval(time.monotonic() - began)))
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

    def _poll_interval(self, waited: float) -> float:
        if self._listening.is_set():
            return self.safety_poll
        return 0.002 if waited < 2 else 0.05

    def _wake(self, job_id: str) -> None:
        with self._lock:
            for event in self._waiters.get(job_id, ()):
                event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

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
        if self._thread is not None:
            self._thread.join(timeout=3)
