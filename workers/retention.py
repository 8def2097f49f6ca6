"""The retention clean-up in the workers: every DESCENT_RETENTION_INTERVAL_SECONDS (with jitter,
so a fleet's workers spread their turns) each worker tries to run it, and one at a time across the
fleet does (``service.store.deletion.exclusive``): the others find it taken and wait for their
next turn. It runs on a thread of its own, never on the heartbeat thread: a long clean-up must not
delay a heartbeat or a lease renewal. ``descent gc`` runs the same clean-up by hand.

Nothing runs unless DESCENT_HISTORY_RETENTION_SECONDS or DESCENT_JOB_RETENTION_SECONDS is set.
"""
from __future__ import annotations

import logging
import random
import threading

from service.config import Settings
from service.store import Database, StoreError
from service.store.deletion import RetentionReport, apply_retention, exclusive

log = logging.getLogger(__name__)


def run_once(db: Database, settings: Settings, dry_run: bool = False) -> RetentionReport | None:
    """One clean-up with the configured retentions; None if another process is running one."""
    with exclusive(db) as mine:
        if not mine:
            return None
        return apply_retention(db, settings.history_retention, settings.job_retention, dry_run=dry_run)


def _loop(db: Database, settings: Settings, stop: threading.Event) -> None:
    wait = random.uniform(0.0, settings.retention_interval)
    while not stop.wait(wait):
        wait = settings.retention_interval * (0.8 + 0.4 * random.random())
        try:
            done = run_once(db, settings)
        except StoreError as exc:
            log.warning("retention clean-up failed: %s", exc)
            continue
        except Exception:  # noqa: BLE001 - the thread must outlive one bad run
            log.exception("retention clean-up failed")
            continue
        if done is not None and (done.deleted or done.pruned or done.removed.sweeps):
            removed = done.removed
            log.info("retention clean-up: deleted %d finished job(s) and %d sweep(s), dropped the histories of "
                     "%d more; %d history rows in all", removed.jobs, removed.sweeps, len(done.pruned),
                     removed.history_rows)


def start(db: Database, settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """Start the clean-up thread when a retention is set; it ends when ``stop`` is set."""
    if not settings.retention_on:
        return None
    thread = threading.Thread(target=_loop, args=(db, settings, stop), name="descent-retention", daemon=True)
    thread.start()
    return thread
