"""``/metrics``: the service in Prometheus's text format, for admins.

Every value is read from SQL when scraped, so any API process answers for the whole fleet,
whichever process did the work:

- gauges, from the tables as they stand: ``descent_jobs{status}``, ``descent_queue_jobs{queue}``
  (each queue's depth: its queued jobs) and ``descent_workers_alive{queue}`` (workers that
  heartbeat within DESCENT_WORKER_LOST_AFTER x DESCENT_HEARTBEAT_SECONDS, by the queues they serve);
- counters and histograms, from the ``counters`` table (``service.store.counters``), which the
  store increments in the transactions that do the work: ``descent_jobs_finished_total{status}``,
  ``descent_steps_total``, ``descent_history_rows_total``, ``descent_reclaims_total``,
  ``descent_job_seconds``, ``descent_queue_wait_seconds`` and ``descent_batch_jobs``.
"""
from __future__ import annotations

from collections import Counter as Tally
from typing import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.api.auth import caller
from service.api.operations import Operation
from service.api.services import services
from service.config import Settings
from service.errors import DescentError, ErrorCode
from service.queue import QUEUES
from service.store import Database, JobStatus, counters
from service.store.fleet import list_workers

bp = Blueprint("metrics", __name__)

# name: (help, label of each value, or None for one unlabelled value, labels shown at zero)
_COUNTERS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    counters.JOBS_FINISHED: ("Jobs that ended, by final status",
                             "status", tuple(s.value for s in JobStatus if s.is_finished)),
    counters.STEPS: ("Optimisation steps run by the jobs that ended", None, ()),
    counters.HISTORY_ROWS: ("History rows written (chunks and final rows)", None, ()),
    counters.RECLAIMS: ("Running jobs taken back from a worker whose lease lapsed", None, ()),
}
_HISTOGRAMS = {
    counters.JOB_SECONDS: "Seconds from a job's start to its end (jobs that ran)",
    counters.QUEUE_WAIT_SECONDS: "Seconds from a job's submission to its start (jobs that ran)",
    counters.BATCH_JOBS: "Jobs claimed together by one claim (a batch)",
}


class SqlCollector(Collector):
    """The metric families, read from SQL at each scrape."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings

    def collect(self) -> Iterator[Metric]:
        by_status, queued = counters.job_counts(self.db)
        jobs = GaugeMetricFamily("descent_jobs", "Jobs by status, now", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs
        depth = GaugeMetricFamily("descent_queue_jobs", "Queued jobs by queue (the queue's depth), now", labels=["queue"])
        for queue in sorted(set(QUEUES) | set(queued)):
            depth.add_metric([queue], queued.get(queue, 0))
        yield depth
        alive = Tally(queue for w in list_workers(self.db, self.settings.worker_lost_seconds) if w.alive
                      for queue in w.queues)
        workers = GaugeMetricFamily("descent_workers_alive", "Workers heartbeating, by a queue they serve",
                                    labels=["queue"])
        for queue in sorted(set(QUEUES) | set(alive)):
            workers.add_metric([queue], alive.get(queue, 0))
        yield workers
        totals = counters.totals(self.db)
        yield from _counter_families(totals)
        yield from _histogram_families(totals)


def _counter_families(totals: dict[tuple[str, str], float]) -> Iterator[Metric]:
    for name, (doc, label, shown) in _COUNTERS.items():
        if label is None:
            family = CounterMetricFamily(name, doc, value=totals.get((name, ""), 0.0))
        else:
            family = CounterMetricFamily(name, doc, labels=[label])
            values = {counters.parse_labels(labels).get(label, ""): value
                      for (n, labels), value in totals.items() if n == name}
            for key in sorted(set(shown) | set(values)):
                family.add_metric([key], values.get(key, 0.0))
        yield family


def _histogram_families(totals: dict[tuple[str, str], float]) -> Iterator[Metric]:
    for name, doc in _HISTOGRAMS.items():
        # stored per bucket (service.store.counters), made cumulative here, over the bounds of
        # this code and any others stored
        counts = {float(counters.bound_text(b)): 0.0 for b in counters.HISTOGRAMS[name]}
        for (n, labels), value in totals.items():
            if n == f"{name}_bucket":
                bound = float(counters.parse_labels(labels)["le"])
                counts[bound] = counts.get(bound, 0.0) + value
        buckets, running = [], 0.0
        for bound in sorted(counts):
            running += counts[bound]
            buckets.append((counters.bound_text(bound), running))
        family = HistogramMetricFamily(name, doc)
        family.add_metric([], buckets, sum_value=totals.get((f"{name}_sum", ""), 0.0))
        yield family


def exposition(db: Database, settings: Settings) -> bytes:
    """The metrics as Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SqlCollector(db, settings))
    return generate_latest(registry)


METRICS = Operation(
    "get", "/metrics", "getMetrics", "The service's metrics in Prometheus's text format (admins only)",
    {"200": {"description": "The Prometheus text exposition format",
             "content": {"text/plain": {"schema": {"type": "string"}}}}},
    (400, 401, 403, 503),
    description="Every value is read from SQL when scraped, so any API process answers for the whole fleet: gauges "
                "(descent_jobs, descent_queue_jobs, descent_workers_alive), counters (descent_jobs_finished_total, "
                "descent_steps_total, descent_history_rows_total, descent_reclaims_total) and histograms "
                "(descent_job_seconds, descent_queue_wait_seconds, descent_batch_jobs).")


@bp.get("/metrics")
def metrics() -> Response:
    if not caller().admin:
        raise DescentError("/metrics is for admins (a token made with --admin)", code=ErrorCode.FORBIDDEN)
    svc = services()
    return Response(exposition(svc.db, svc.settings), content_type=CONTENT_TYPE_LATEST)
