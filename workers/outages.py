"""An outage of the database or the broker, told apart from a job's own fault, and ridden out.

A job that meets an outage keeps its attempt (it is handed back, ``ending.hand_back``); one whose
own statements caused the fault is charged for it like a crash.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from service.store import StoreUnavailable
from service.store.db import sqlstate

log = logging.getLogger("workers.runner")
T = TypeVar("T")

# Seconds a worker retries the store through an outage before it gives up on what it was doing
# (then a job it holds is handed back without its attempt counted: ``runner``).
STORE_PATIENCE = 300.0


# Database states that a job's own statements can cause again and again (one past the statement
# timeout, the server out of memory on it, a program limit such as a row too big): such a fault is
# charged to the job like a crash, so its attempts run out rather than it being handed back forever.
_JOB_CAUSED_STATES = ("57014", "53200")


def infrastructure_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the infrastructure's fault, never the job's: the database unavailable,
    read-only (a failover in progress) or a row locked past the lock timeout, or the broker
    unreachable. A job that meets one keeps its attempt; one its own statements may cause
    (``_JOB_CAUSED_STATES``, class 54) counts as its crash."""
    state = sqlstate(exc)
    if state in _JOB_CAUSED_STATES or state[:2] == "54":
        return False
    if isinstance(exc, StoreUnavailable):
        return True
    import psycopg
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    driver = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(driver, psycopg.Error):
        return isinstance(driver, (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction))
    if isinstance(exc, DBAPIError):
        return False
    try:
        from kombu.exceptions import OperationalError as BrokerError
        from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout
    except ImportError:  # pragma: no cover - both ship with celery[redis]
        return False
    return isinstance(exc, (BrokerError, RedisConnectionError, RedisTimeout))


def with_retries(fn: Callable[[], T], what: str, give_up_after: float | None = None) -> T:
    """Call ``fn``, retrying with backoff while the database is unavailable (or read-only), for up
    to ``give_up_after`` seconds (``STORE_PATIENCE``); then the last error is raised."""
    delay, began = 0.2, time.monotonic()
    patience = STORE_PATIENCE if give_up_after is None else give_up_after
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - only the infrastructure's faults are retried
            if not infrastructure_fault(exc) or time.monotonic() - began > patience:
                raise
            log.warning("%s: database unavailable (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
