"""The reconciler against a real Redis queue, on SQLite and PostgreSQL: a queue never holds more
messages than jobs wait for, however long its backlog, and the messages a flush or a loss took
are sent again, once."""
from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Iterator

import pytest

from service.queue import Dispatcher, make_celery, waiting_messages
from service.store import jobs as job_store
from service.store.jobs import BACKLOG_PATIENCE
from service.store.models import Job
from testkit.backends import embedded_settings, redis_is_own
from workers import fleet as worker_fleet
from workers import state as worker_state
from workers.state import WorkerState, _identity

SPEC = {"objective": "x.sum()", "x0": [1, 2], "steps": 10}
REQUEUE_AFTER = 30.0


@pytest.fixture
def redis_reconciler(db, tmp_path, monkeypatch, redis_url) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """(``reconcile_once``, the dispatcher, a Redis client) of a CPU worker on ``db`` and a Redis
    database of its own (on the test process's redis-server); each re-sent job in a message of its
    own, for counting."""
    import redis

    url = redis_url
    settings = dataclasses.replace(embedded_settings(tmp_path), database_url=db.url, broker_url=url, batch_max=1)
    celery = make_celery(settings)
    dispatcher = Dispatcher(celery)
    monkeypatch.setattr(worker_state, "_state", WorkerState(
        settings=settings, db=db, worker_id=_identity(), hostname="test", queues=["cpu"], device="cpu",
        dispatcher=dispatcher))
    client = redis.Redis.from_url(url)
    yield (lambda: worker_fleet.reconcile_once(REQUEUE_AFTER)), dispatcher, client
    client.close()
    celery.close()


def overdue(db, job_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The jobs were last sent longer ago than the backlog patience."""
    with db.session() as s:
        for job_id in job_ids:
            s.get(Job, job_id).enqueued_at -= timedelta(seconds=REQUEUE_AFTER * BACKLOG_PATIENCE + 1)


def test_a_long_backlog_on_redis_gains_no_message_and_a_lost_one_is_sent_once(db, redis_reconciler):
    reconcile, dispatcher, client = redis_reconciler
    celery = dispatcher.celery
    ids = [job_store.create_job(db, SPEC, [2], "cpu")[0].id for _ in range(6)]
    for job_id in ids:
        assert dispatcher.send(job_id, "cpu")
    for _ in range(3):  # period after period, every job waiting its turn
        overdue(db, ids)
        assert reconcile() == [] and waiting_messages(celery, "cpu") == len(ids) == client.llen("cpu")
    client.lpop("cpu", 2)  # two messages lost
    overdue(db, ids)
    assert len(reconcile()) == 2 and client.llen("cpu") == len(ids)
    overdue(db, ids)
    assert reconcile() == [] and client.llen("cpu") == len(ids)


def test_after_a_flush_every_waiting_job_is_sent_again_once(db, redis_reconciler):
    reconcile, dispatcher, client = redis_reconciler
    if not redis_is_own(dispatcher.celery.conf.broker_url):
        pytest.skip("a Redis database on a server the test did not start is never flushed (DESCENT_TEST_REDIS_URL)")
    ids = [job_store.create_job(db, SPEC, [2], "cpu")[0].id for _ in range(3)]
    for job_id in ids:
        assert dispatcher.send(job_id, "cpu")
    client.flushdb()  # FLUSHALL, or a restart with no persistence: the queue is gone (its own server's)
    assert waiting_messages(dispatcher.celery, "cpu") == 0
    overdue(db, ids)
    assert sorted(reconcile()) == sorted(ids) and client.llen("cpu") == 3
    overdue(db, ids)
    assert reconcile() == [] and client.llen("cpu") == 3
