"""Counters in SQL, on SQLite and PostgreSQL: one upsert per write, summed over writers, and
counted by the transactions that do the work (once, however they are retried)."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from service.rows import HistoryRows
from service.store import counters, fleet
from service.store import jobs as job_store
from service.store.batches import claim_batch
from service.store.chunks import write_many
from service.store.history import ChunkWrite, count_rows, save_chunk, save_chunks
from service.store.models import Counter, Worker
from service.status import JobStatus

SPEC = {"objective": "x.sum()", "x0": [1, 2], "steps": 10}
FINISHED = counters.JOBS_FINISHED


def new_job(db, queue: str = "cpu", batch_key: str | None = None) -> str:  # type: ignore[no-untyped-def]
    job, _ = job_store.create_job(db, SPEC, [2], queue, batch_key=batch_key)
    return job.id


def rows(first: int, n: int) -> HistoryRows:
    return HistoryRows(steps=list(range(first, first + n)), f=[1.0] * n, grad_norm=[1.0] * n, lr=[0.1] * n)


def test_upserts_add_per_source_and_totals_sum_the_sources(db):
    with db.session() as s:
        counters.add(s, "w1", {("a_total", ""): 2, ("b_total", "status=failed"): 1})
    with db.session() as s:
        counters.add(s, "w1", {("a_total", ""): 3})
        counters.add(s, "w2", {("a_total", ""): 0.5, ("b_total", "status=failed"): 4})
    assert counters.totals(db) == {("a_total", ""): 5.5, ("b_total", "status=failed"): 5.0}
    with db.session() as s:
        assert s.query(Counter).count() == 4  # a row per (name, labels, source)


def test_a_rolled_back_transaction_adds_nothing(db):
    with pytest.raises(RuntimeError), db.session() as s:
        counters.add(s, "w1", {("a_total", ""): 1})
        raise RuntimeError("the work failed")
    assert counters.totals(db) == {}


def test_concurrent_writers_lose_no_increment(db):
    def bump(source: str) -> None:
        for _ in range(20):
            with db.session() as s:
                counters.add(s, source, {("a_total", ""): 1, ("b_total", ""): 1})

    threads = [threading.Thread(target=bump, args=(source,)) for source in ("w1", "w1", "w2", "w3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.totals(db) == {("a_total", ""): 80.0, ("b_total", ""): 80.0}


def test_histogram_observations_land_in_their_buckets():
    into = counters.increments()
    counters.observe(into, counters.JOB_SECONDS, [0.05, 0.1, 0.2, 7200, -1])
    assert into[("descent_job_seconds_bucket", "le=0.1")] == 3  # -1 (a clock's step back) counts as 0
    assert into[("descent_job_seconds_bucket", "le=0.5")] == 1
    assert into[("descent_job_seconds_bucket", "le=+Inf")] == 1
    assert into[("descent_job_seconds_sum", "")] == pytest.approx(7200.35)


def test_a_job_run_to_its_end_is_counted_by_its_writes(db):
    job_id = new_job(db)
    assert [j.id for j in claim_batch(db, [job_id], "w1", 30, 3, limit=10, max_elements=1000)] == [job_id]
    save_chunk(db, job_id, "w1", rows(0, 4), None, None, 30)
    job_store.finish_job(db, job_id, "w1", JobStatus.SUCCEEDED, {"steps": 6}, None, final=[rows(4, 3)])
    totals = counters.totals(db)
    assert totals[(FINISHED, "status=succeeded")] == 1
    assert totals[(counters.STEPS, "")] == 6
    assert totals[(counters.HISTORY_ROWS, "")] == 7
    # One observation each, in whichever bucket this machine's speed puts it.
    for histogram in ("descent_job_seconds_bucket", "descent_queue_wait_seconds_bucket"):
        assert sum(v for (name, _), v in totals.items() if name == histogram) == 1
    assert totals[("descent_batch_jobs_bucket", "le=1.0")] == 1


def test_a_batch_ending_counts_each_job_with_its_final_status(db):
    ids = [new_job(db, batch_key="k") for _ in range(5)]
    claimed = claim_batch(db, ids, "w1", 30, 3, limit=10, max_elements=1000)
    assert len(claimed) == 5
    job_store.request_cancel(db, ids[0])  # a cancel that comes late still ends the job cancelled
    endings = [job_store.Ending(i, JobStatus.SUCCEEDED, {"steps": 10}, None, (rows(0, 2),)) for i in ids[:4]]
    endings.append(job_store.Ending(ids[4], JobStatus.FAILED, None, "boom"))
    assert job_store.finish_jobs(db, "w1", endings) == set(ids)
    totals = counters.totals(db)
    assert totals[(FINISHED, "status=succeeded")] == 3
    assert totals[(FINISHED, "status=cancelled")] == 1
    assert totals[(FINISHED, "status=failed")] == 1
    assert totals[(counters.STEPS, "")] == 40
    assert totals[(counters.HISTORY_ROWS, "")] == 8
    assert sum(v for (n, _), v in totals.items() if n == "descent_job_seconds_bucket") == 5
    assert totals[("descent_batch_jobs_bucket", "le=16.0")] == 1
    # a second ending of the same jobs ends nothing and counts nothing
    assert job_store.finish_jobs(db, "w1", endings) == set()
    assert counters.totals(db) == totals


def test_a_replaced_write_counts_only_the_rows_it_adds(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    save_chunk(db, job_id, "w1", rows(0, 5), None, None, 30)
    # a chunk from the same step again, as after an ambiguous commit that went through: its
    # rows replace the stored ones, and only the two new ones count
    assert save_chunks(db, "w1", [ChunkWrite(job_id, rows(0, 7))], 30) == {job_id: False}
    assert counters.totals(db)[(counters.HISTORY_ROWS, "")] == 7

    with db.session() as s:
        assert write_many(s, [(job_id, rows(5, 3))], replace=True) == 1  # 5 and 6 were stored
        assert write_many(s, [(job_id, rows(8, 3))], replace=False) == 3
        # a job's final rows in two blocks: the stored rows from 5 on are subtracted once
        assert write_many(s, [(job_id, rows(5, 3)), (job_id, rows(8, 4))], replace=True) == 1
    assert count_rows(db, job_id) == 12


def test_cancels_failures_and_reclaims_are_counted(db):
    queued, unserved, lapsed = new_job(db), new_job(db, queue="gpu"), new_job(db)
    job_store.request_cancel(db, queued)
    assert job_store.fail_unserved(db, "gpu", -1, "no gpu worker") == [unserved]
    job_store.claim_job(db, lapsed, "w1", -1, 3)  # its lease is already over
    assert job_store.requeue_if_stale(db, lapsed, 60)
    assert not job_store.requeue_if_stale(db, lapsed, 60)  # queued again now, and not overdue: no second reclaim
    totals = counters.totals(db)
    assert totals[(FINISHED, "status=cancelled")] == 1
    assert totals[(FINISHED, "status=failed")] == 1
    assert totals[(counters.RECLAIMS, "")] == 1


def test_job_counts_by_status_and_queue(db):
    a, _, _ = new_job(db), new_job(db), new_job(db, queue="gpu")
    job_store.claim_job(db, a, "w1", 30, 3)
    assert counters.job_counts(db) == ({"queued": 2, "running": 1}, {"cpu": 1, "gpu": 1})


def test_a_pruned_workers_counters_fold_into_the_retired_ones_with_the_totals_unchanged(db):
    for worker_id in ("old:1", "gone:2", "live:3"):
        fleet.heartbeat(db, fleet.Heartbeat(worker_id, "h", 1, ["cpu"], "cpu"))
    fleet.stop_worker(db, "gone:2")
    with db.session() as s:
        counters.add(s, "old:1", {(FINISHED, "status=succeeded"): 3, (counters.STEPS, ""): 1500,
                                  ("descent_job_seconds_bucket", "le=0.1"): 3})
        counters.add(s, "gone:2", {(FINISHED, "status=succeeded"): 2, (FINISHED, "status=failed"): 1})
        counters.add(s, "live:3", {(FINISHED, "status=succeeded"): 5})
        counters.add(s, counters.RETIRED_SOURCE, {(FINISHED, "status=succeeded"): 10})  # an earlier pruning
        counters.add(s, counters.API_SOURCE, {(FINISHED, "status=cancelled"): 1})
        for worker_id in ("old:1", "gone:2"):
            row = s.get(Worker, worker_id)
            row.last_heartbeat -= timedelta(days=2)
            if row.stopped_at is not None:
                row.stopped_at -= timedelta(days=2)
    before = counters.totals(db)
    assert fleet.prune_workers(db, lost_for=86_400, alive_within=15) == 2
    assert counters.totals(db) == before
    with db.session() as s:
        sources = {(c.source, c.name, c.labels): c.value for c in s.query(Counter)}
    assert {source for source, _, _ in sources} == {"live:3", counters.RETIRED_SOURCE, counters.API_SOURCE}
    assert sources[(counters.RETIRED_SOURCE, FINISHED, "status=succeeded")] == 15
    assert sources[(counters.RETIRED_SOURCE, counters.STEPS, "")] == 1500
    assert fleet.prune_workers(db, lost_for=86_400, alive_within=15) == 0 and counters.totals(db) == before
