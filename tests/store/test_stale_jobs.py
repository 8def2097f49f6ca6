"""Which jobs the reconciler re-sends, on SQLite and PostgreSQL: only the jobs of the messages a
queue lacks (its queued jobs counted in messages, one per job or per batch of one batch key), the
longest unsent first."""
from __future__ import annotations

from datetime import timedelta

from service.queue import messages_for
from service.store import jobs as job_store
from service.store.jobs import BACKLOG_PATIENCE
from service.store.models import Job
from tests.store.test_store import new_job


def queued(db, n: int, queue: str = "cpu") -> list[str]:
    """``n`` queued jobs on ``queue``, the first sent longest ago, all long overdue."""
    ids = [new_job(db) for _ in range(n)]
    with db.session() as s:
        for i, job_id in enumerate(ids):
            row = s.get(Job, job_id)
            row.queue = queue
            row.enqueued_at = row.enqueued_at - timedelta(seconds=100 * BACKLOG_PATIENCE * 30 - i)
    return ids


def stale(db, batch_max: int = 1, **waiting: int | None) -> list[str]:
    return [job_id for job_id, _, _ in job_store.stale_jobs(db, 30, waiting, batch_max=batch_max)]


def test_a_queue_gets_only_as_many_jobs_as_it_lacks_messages_the_longest_unsent_first(db):
    jobs = queued(db, 5)
    assert stale(db, cpu=5, gpu=0) == []  # a message for each: a backlog, however old
    assert stale(db, cpu=2, gpu=0) == jobs[:3]
    assert stale(db, cpu=0, gpu=0) == jobs
    assert stale(db, cpu=7, gpu=0) == []  # more messages than jobs (duplicates): none


def test_a_queue_the_broker_cannot_count_gets_none_and_queues_are_counted_apart(db):
    cpu, gpu = queued(db, 2), queued(db, 2, "gpu")
    assert stale(db, cpu=None, gpu=1) == gpu[:1]
    assert stale(db, cpu=1, gpu=None) == cpu[:1]
    assert job_store.stale_jobs(db, 30, waiting={"cpu": 0, "gpu": 0}, unserved=["gpu"]) == \
        [(job_id, "cpu", None) for job_id in cpu]


def test_behind_a_backlog_a_job_is_re_sent_only_after_the_backlog_patience(db):
    job_id = new_job(db)
    new_job(db)  # a fresh job, not overdue: a message waits for it
    with db.session() as s:
        s.get(Job, job_id).enqueued_at -= timedelta(seconds=60)
    assert stale(db, cpu=0) == [job_id]  # an empty queue: overdue after requeue_after
    assert stale(db, cpu=1) == []  # a message waits: most likely a backlog
    with db.session() as s:
        s.get(Job, job_id).enqueued_at -= timedelta(seconds=30 * BACKLOG_PATIENCE)
    assert stale(db, cpu=1) == [job_id]


def test_jobs_of_one_batch_key_count_as_the_messages_they_are_sent_in(db):
    """A 10-job sweep of one key goes out in 3 messages of at most 4: 3 waiting messages are all
    it needs, however many of its jobs are overdue; with 1, the jobs of 2 messages are re-sent."""
    jobs = queued(db, 10)
    with db.session() as s:
        for job_id in jobs:
            s.get(Job, job_id).batch_key = "k"
    assert stale(db, batch_max=4, cpu=3, gpu=0) == []
    assert stale(db, batch_max=4, cpu=1, gpu=0) == jobs[:8]
    assert stale(db, batch_max=4, cpu=0, gpu=0) == jobs  # a flushed broker: every job again
    alone = queued(db, 2)  # jobs without a key need a message each: 5 in all, 2 lacking
    again = job_store.stale_jobs(db, 30, {"cpu": 3, "gpu": 0}, batch_max=4)
    assert len(messages_for(again, 4)) == 2 and {job[0] for job in again} <= set(jobs + alone)
