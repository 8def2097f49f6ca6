"""The workers' rows: what each says of itself, lost workers, reclaimed jobs, pruning."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from service.store import fleet
from service.store import jobs as job_store
from service.store.models import Job, Worker
from service.status import JobStatus
from tests.store.test_store import new_job


def beat(db, worker_id: str = "h:1", job: str | None = None) -> None:
    fleet.heartbeat(db, fleet.Heartbeat(worker_id, "h", 1, ["cpu"], "cpu", current_job=job, device_name="x86_64",
                                        versions={"descent": "0.1.0"}))


def age(db, worker_id: str, seconds: float) -> None:
    """Move the worker's last heartbeat ``seconds`` into the past."""
    with db.session() as s:
        row = s.get(Worker, worker_id)
        row.last_heartbeat = row.last_heartbeat - timedelta(seconds=seconds)


def test_a_heartbeat_registers_the_worker_and_the_next_one_updates_it(db):
    beat(db)
    beat(db, job=None)
    [worker] = fleet.list_workers(db, alive_within=15)
    assert (worker.alive, worker.lost_since, worker.device_name, worker.versions, worker.jobs_done) == \
        (True, None, "x86_64", {"descent": "0.1.0"}, 0)


def test_a_worker_that_missed_its_heartbeats_is_lost_since_then(db):
    beat(db)
    age(db, "h:1", 100)
    [worker] = fleet.list_workers(db, alive_within=15)
    assert not worker.alive and worker.lost_since == worker.last_heartbeat + timedelta(seconds=15)


def test_a_lost_workers_job_is_reclaimed_and_its_current_job_cleared(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "h:1", 30, 3)
    beat(db, job=job_id)
    assert fleet.list_workers(db, alive_within=15)[0].current_job == job_id
    with db.session() as s:  # the worker died: its lease lapsed
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=Job.created_at))
    assert job_store.requeue_if_stale(db, job_id, requeue_after=30)
    assert job_store.get_job(db, job_id).status == JobStatus.QUEUED
    with db.session() as s:
        assert s.get(Worker, "h:1").current_job is None


def test_a_current_job_is_shown_only_while_it_runs_on_that_worker(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "h:2", 30, 3)  # another worker holds it
    beat(db, job=job_id)
    assert fleet.list_workers(db, alive_within=15)[0].current_job is None


def test_finished_jobs_count_for_the_worker_that_ran_them(db):
    beat(db)
    for _ in range(2):
        job_id = new_job(db)
        job_store.claim_job(db, job_id, "h:1", 30, 3)
        job_store.finish_job(db, job_id, "h:1", JobStatus.SUCCEEDED, {"steps": 0}, None)
    assert fleet.list_workers(db, alive_within=15)[0].jobs_done == 2


def test_lost_workers_are_pruned_after_the_retention(db):
    beat(db, "old:1")
    beat(db, "new:1")
    age(db, "old:1", 90_000)
    assert fleet.prune_workers(db, lost_for=86_400) == 1
    assert [w.id for w in fleet.list_workers(db, alive_within=15)] == ["new:1"]


def test_unserved_jobs_fail_once_with_their_reason_and_a_claimed_one_is_left_alone(db):
    waiting, claimed, fresh = new_job(db), new_job(db), new_job(db)
    with db.session() as s:
        for job_id in (waiting, claimed):
            row = s.get(Job, job_id)
            row.queue, row.created_at = "gpu", row.created_at - timedelta(hours=2)
        s.get(Job, fresh).queue = "gpu"
    job_store.claim_job(db, claimed, "h:1", 30, 3)
    assert job_store.fail_unserved(db, "gpu", 3600, "waiting for a GPU worker: none came") == [waiting]
    assert job_store.get_job(db, waiting).status == JobStatus.FAILED
    assert job_store.get_job(db, waiting).error.startswith("waiting for a GPU worker")
    assert [job_store.get_job(db, i).status for i in (claimed, fresh)] == [JobStatus.RUNNING, JobStatus.QUEUED]
    assert job_store.fail_unserved(db, "gpu", 3600, "again") == []


def gpu_beat(db, worker_id: str = "g:1") -> None:
    fleet.heartbeat(db, fleet.Heartbeat(worker_id, "g", 1, ["gpu"], "gpu", device_name="Fake GPU"))


def test_a_worker_that_leaves_cleanly_is_shown_stopped_not_lost(db):
    beat(db)
    fleet.stop_worker(db, "h:1")
    [worker] = fleet.list_workers(db, alive_within=15)
    assert (worker.alive, worker.lost_since, worker.state) == (False, None, "stopped")
    assert worker.last_heartbeat <= worker.stopped_at


def test_a_stopped_gpu_worker_routes_nothing_but_its_last_heartbeat_still_counts(db):
    gpu_beat(db)
    fleet.stop_worker(db, "g:1")
    assert not fleet.live_gpu_worker(db, alive_within=15)  # device: auto goes to cpu
    assert fleet.gpu_worker_seen(db, within=3600)  # a restart's gap: gpu jobs are still served
    age(db, "g:1", 7200)
    assert not fleet.gpu_worker_seen(db, within=3600)


def test_the_same_worker_id_heartbeating_again_is_alive_again(db):
    gpu_beat(db)
    fleet.stop_worker(db, "g:1")
    gpu_beat(db)
    [worker] = fleet.list_workers(db, alive_within=15)
    assert (worker.alive, worker.state, worker.stopped_at) == (True, "alive", None)
    assert fleet.live_gpu_worker(db, alive_within=15)


def test_stopped_and_lost_workers_are_pruned_counting_from_when_they_stopped_or_were_lost(db):
    for worker_id in ("stopped-long:1", "stopped-now:1", "lost-long:1", "lost-lately:1", "alive:1"):
        beat(db, worker_id)
    for worker_id in ("stopped-long:1", "stopped-now:1"):
        fleet.stop_worker(db, worker_id)
    with db.session() as s:
        row = s.get(Worker, "stopped-long:1")
        row.stopped_at = row.stopped_at - timedelta(seconds=200)
    age(db, "stopped-long:1", 200)
    age(db, "stopped-now:1", 200)  # heartbeat long ago, but stopped only now
    age(db, "lost-long:1", 120)  # lost (15 s after its heartbeat) 105 s ago
    age(db, "lost-lately:1", 110)  # lost 95 s ago
    assert fleet.prune_workers(db, lost_for=100, alive_within=15) == 2
    assert [w.id for w in fleet.list_workers(db, alive_within=15)] == ["alive:1", "lost-lately:1", "stopped-now:1"]
