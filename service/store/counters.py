"""Monotonic counters and histograms in SQL, for ``/metrics``.

Each is incremented inside the transaction that does the counted work (a job ending, a chunk of
history written, a reclaim), so a rolled-back or retried transaction never counts twice and any
API process reads the same totals, whichever process did the work. A writer keeps its own row
per (name, labels) (``source``: a worker's id, or the API or reconciler), so writers never wait
on one row; ``totals`` sums over the sources.

A histogram ``h`` is counters too: ``h_bucket`` with labels ``le=B`` counts the observations of
that bucket alone (the smallest bound ``B`` at or above the value; ``/metrics`` makes them
cumulative), and ``h_sum`` their sum.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, MutableMapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from service.store.db import Database, one_of
from service.store.models import Counter, Job
from service.status import JobStatus

# The counters and histograms the store keeps (what /metrics shows, and how).
JOBS_FINISHED = "descent_jobs_finished_total"  # labels status=
STEPS = "descent_steps_total"
HISTORY_ROWS = "descent_history_rows_total"
RECLAIMS = "descent_reclaims_total"
JOB_SECONDS = "descent_job_seconds"
QUEUE_WAIT_SECONDS = "descent_queue_wait_seconds"
BATCH_JOBS = "descent_batch_jobs"

SECONDS_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, math.inf)
BATCH_BUCKETS = (1, 2, 4, 16, 64, 256, 1024, 4096, 10000, math.inf)
HISTOGRAMS = {JOB_SECONDS: SECONDS_BUCKETS, QUEUE_WAIT_SECONDS: SECONDS_BUCKETS, BATCH_JOBS: BATCH_BUCKETS}

# Writers that are not workers (each keeps its own rows), and where pruned workers' rows go.
API_SOURCE = "api"
RECONCILER_SOURCE = "reconciler"
RETIRED_SOURCE = "retired"

Increments = MutableMapping[tuple[str, str], float]


def label_text(**labels: str) -> str:
    """The canonical text of a label set: ``k=v`` pairs sorted by key, joined by commas."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def parse_labels(text: str) -> dict[str, str]:
    """The label set of ``label_text``."""
    return dict(pair.split("=", 1) for pair in text.split(",")) if text else {}


def bound_text(bound: float) -> str:
    """A bucket bound as Prometheus writes ``le``: ``+Inf``, or the float (``1.0``, ``0.5``)."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def increments() -> Increments:
    """An empty set of increments to add to (``add`` writes them)."""
    return defaultdict(float)


def observe(into: Increments, histogram: str, values: Iterable[float]) -> None:
    """Add observations of ``histogram`` to ``into`` (a value below zero, a clock's step back, counts as zero)."""
    buckets = HISTOGRAMS[histogram]
    for value in values:
        value = max(0.0, float(value))
        bound = next(b for b in buckets if value <= b)
        into[(f"{histogram}_bucket", f"le={bound_text(bound)}")] += 1
        into[(f"{histogram}_sum", "")] += value


def add(s: Any, source: str, increments: Mapping[tuple[str, str], float]) -> None:
    """Add ``increments`` ({(name, labels): amount}) to ``source``'s rows, in the caller's
    transaction ``s``, as one INSERT ... ON CONFLICT DO UPDATE (rows in one order, so two
    transactions adding to the same rows never deadlock)."""
    rows = [{"name": name, "labels": labels, "source": source, "value": float(amount)}
            for (name, labels), amount in sorted(increments.items()) if amount]
    if not rows:
        return
    dialect = s.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Counter.__table__).values(rows)
    s.execute(statement.on_conflict_do_update(
        index_elements=["name", "labels", "source"],
        set_={"value": Counter.__table__.c.value + statement.excluded.value}))


def ended(s: Any, source: str, status: str, jobs: int = 1) -> None:
    """Count ``jobs`` that ended in ``status`` outside ``finish_jobs`` (a cancel, a give-up, a
    wait past its limit), in the caller's transaction."""
    add(s, source, {(JOBS_FINISHED, label_text(status=str(status))): jobs})


def retire(s: Any, sources: Sequence[str]) -> int:
    """Fold the rows of ``sources`` (workers whose rows are pruned) into ``RETIRED_SOURCE``'s, in
    the caller's transaction ``s``: each worker that ever ran adds a row per counter it touched,
    and a fleet that restarts its workers would grow the table forever. Totals are unchanged.
    The rows are deleted first (``RETURNING`` what they held), so an increment a late writer
    commits meanwhile either is in what is folded or makes a row of its own: none is lost.
    Returns how many rows were folded."""
    if not sources:
        return 0
    counters = Counter.__table__
    folded = s.execute(counters.delete().where(one_of(counters.c.source, sources, s.bind.dialect.name))
                       .returning(counters.c.name, counters.c.labels, counters.c.value)).all()
    sums = increments()
    for name, labels, value in folded:
        sums[(name, labels)] += float(value or 0)
    add(s, RETIRED_SOURCE, sums)
    return len(folded)


def totals(db: Database) -> dict[tuple[str, str], float]:
    """Every counter's value summed over its sources: {(name, labels): value}."""
    counters = Counter.__table__
    with db.session() as s:
        rows = s.execute(select(counters.c.name, counters.c.labels, func.sum(counters.c.value))
                         .group_by(counters.c.name, counters.c.labels)).all()
    return {(name, labels): float(value or 0) for name, labels, value in rows}


def job_counts(db: Database) -> tuple[dict[str, int], dict[str, int]]:
    """The gauges ``/metrics`` reads beside the counters, as the jobs table stands now: jobs by
    status, and queued jobs by queue (each queue's depth)."""
    jobs = Job.__table__
    with db.session() as s:
        by_status = s.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        queued = s.execute(select(jobs.c.queue, func.count()).where(jobs.c.status == JobStatus.QUEUED)
                           .group_by(jobs.c.queue)).all()
    return {status: int(n) for status, n in by_status}, {queue: int(n) for queue, n in queued}
