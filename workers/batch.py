"""Running claimed compatible jobs as one batch (``service.engine.run_batch``) and persisting it.

Each lane's chunks are saved together at every boundary (one transaction: rows, checkpoints,
lease renewals, and each job's cancel flag read back), the lanes that end on one step are
finished together, and lanes handed back at shutdown are released together and sent on in one
message, to resume as a batch from their checkpoints (all of one step). A lane whose lease was
lost is dropped at once: nothing more of it is written. Jobs that cannot join the batch (a
stored spec that no longer checks out, an objective vmap cannot map exactly) are returned to run
alone; nothing of theirs was written.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from service.engine import Chunk, EngineError, Lane, LaneEnd, NotBatchable, StopReason, run_batch
from service.queue import Message
from service.spec import SpecError, check_spec
from service.spec.validate import lane_checker
from service.store import JobStatus, StoreError
from service.store import jobs as job_store
from service.store.history import ChunkWrite, save_chunks
from service.store.records import JobRecord
from workers import pacing
from workers.devices import NO_GPU, job_device
from workers.ending import OBJECTIVE_ERRORS, Outcome, fail_job, failure_message, hand_back, stored_result, wrote
from workers.outages import infrastructure_fault, with_retries
from workers.pacing import CANCEL_POLL_SECONDS, checkpoint_interval
from workers.state import WorkerState

log = logging.getLogger("workers.runner")


def run_batch_of(state: WorkerState, jobs: list[JobRecord]) -> tuple[dict[str, Outcome], list[JobRecord]]:
    """Run the claimed jobs (one batch key, one start step) as one batch; returns the outcomes of
    the jobs it ran, and the jobs to run alone instead."""
    try:
        lead = check_spec(jobs[0].spec, state.settings.limits, trace=False)
    except SpecError:
        return {}, jobs  # each alone: it fails with its own message
    device = job_device(jobs[0], state.settings.gpu_on_cpu)
    if device is None:
        return {job.id: fail_job(state, job.id, NO_GPU) for job in jobs}, []
    lanes, members, alone = [], [], []
    check_lane = lane_checker(lead, state.settings.limits)
    for job in jobs:
        try:
            lanes.append(Lane(lead if job is jobs[0] else check_lane(job.spec), job.checkpoint))
            members.append(job)
        except SpecError:
            alone.append(job)
    if len(members) < 2:
        return {}, jobs
    sink = _Sink(state, members)
    log.info("running %d jobs as one batch (first %s)", len(members), members[0].id)
    # Every renewal and finish of a lane is fenced on its stored history reaching what was written.
    chunking = replace(pacing.BATCH_CHUNKING, checkpoint_seconds=checkpoint_interval(lead.numel, len(lanes)))
    with job_store.believing(sink.written) as behind:
        try:
            run_batch(lanes, sink, device=device, chunking=chunking, time_limit=state.settings.limits.max_seconds)
        except NotBatchable as exc:
            released = _alone_from_now_on(state, jobs, str(exc))
            return dict.fromkeys(released, "released"), jobs[:1]
        except StoreError:
            raise  # an outage past the retries: the runner hands the jobs back
        except (EngineError, *OBJECTIVE_ERRORS) as exc:
            if infrastructure_fault(exc):
                raise
            sink.fail_unfinished(failure_message(exc))
    outcomes = {members[lane].id: outcome for lane, outcome in sink.outcomes_by_lane.items()}
    dropped = [members[lane] for lane in sink.lost if members[lane].id not in outcomes or
               outcomes[members[lane].id] == "lease_lost"]
    outcomes.update({job.id: "lease_lost" for job in dropped})
    rolled_back = [job for job in dropped if job.id in behind]
    if rolled_back:  # still held: they resume from what is stored, attempts not counted
        log.warning("%d batched job(s): the stored history is behind what this worker wrote (the database lost "
                    "a commit); handing them back to resume from what is stored", len(rolled_back))
        outcomes.update(dict.fromkeys(hand_back(state, rolled_back), "released"))
    return outcomes, alone


def _alone_from_now_on(state: WorkerState, jobs: list[JobRecord], why: str) -> set[str]:
    """Jobs of a batch key that cannot batch (nothing of theirs was written): this worker runs the
    first alone and claims no batch of that key again; the others go back to the queue (their
    attempt given back), each in a message of its own, for any worker to run alone. Returns the
    ids released."""
    key = jobs[0].batch_key
    log.info("jobs of batch key %s run alone: %s", key, why)
    if key is not None:
        state.solo_keys.add(key)
    rest = [job.id for job in jobs[1:]]
    released = with_retries(lambda: job_store.release_jobs(state.db, rest, state.worker_id),
                            f"release {len(rest)} job(s)") if rest else set()
    if state.dispatcher is not None:
        for job in jobs[1:]:
            if job.id in released:
                state.dispatcher.send(job.id, job.queue)
    return released


class _Sink:
    """The batch's output into the store (``service.engine.BatchSink``)."""

    def __init__(self, state: WorkerState, jobs: list[JobRecord]) -> None:
        self.state, self.jobs = state, jobs
        self.cancel = [False] * len(jobs)
        self.lost: set[int] = set()
        self.outcomes_by_lane: dict[int, Outcome] = {}
        self.last_saved = time.monotonic()
        # What each job's stored history reaches, as far as this worker wrote it (``jobs.believing``).
        self.written = {job.id: job_store.Written(None, job.checkpoint_step) for job in jobs}

    def _save(self, items: list[tuple[int, Chunk]]) -> None:
        """Save the lanes' chunks in one transaction; learn each one's cancel flag, or its loss."""
        settings, jobs = self.state.settings, self.jobs
        writes = [ChunkWrite(jobs[lane].id, chunk.rows, chunk.checkpoint, chunk.end, chunk.progress)
                  for lane, chunk in items if lane not in self.lost]
        if not writes:
            return
        held = with_retries(lambda: save_chunks(self.state.db, self.state.worker_id, writes, settings.lease_seconds),
                            f"save history of {len(writes)} batched job(s)")
        for lane, chunk in items:
            job_id = jobs[lane].id
            if job_id in held:
                self.written[job_id] = wrote(self.written[job_id], chunk.rows, chunk.checkpoint is not None, chunk.end)
        self._learn(held, [lane for lane, _ in items])
        self.last_saved = time.monotonic()

    def _learn(self, held: dict[str, bool], lanes: list[int]) -> None:
        for lane in lanes:
            job_id = self.jobs[lane].id
            if job_id in held:
                self.cancel[lane] = self.cancel[lane] or held[job_id]
            elif lane not in self.lost:
                log.warning("job %s was taken from this worker (lease lost); dropping it from its batch", job_id)
                self.lost.add(lane)

    def chunks(self, chunks: list[tuple[int, Chunk]]) -> None:
        self._save(chunks)

    def should_stop(self, lane: int) -> StopReason | None:
        if time.monotonic() - self.last_saved >= CANCEL_POLL_SECONDS:
            self.last_saved = time.monotonic()
            running = [i for i in range(len(self.jobs)) if i not in self.outcomes_by_lane and i not in self.lost]
            try:
                held = job_store.renew_jobs(self.state.db, [self.jobs[i].id for i in running],
                                            self.state.worker_id, self.state.settings.lease_seconds)
                self._learn(held, running)
            except Exception as exc:  # noqa: BLE001 - an outage: the next poll tries again, the fleet thread renews too
                if not infrastructure_fault(exc):
                    raise
                log.warning("batch of %s: could not poll for cancels (%s)", self.jobs[0].id, exc)
        if lane in self.lost or self.cancel[lane]:
            return StopReason.CANCELLED  # a lost lane stops too; nothing more of it is written
        if self.state.shutting_down.is_set():
            return StopReason.INTERRUPTED
        return None

    def ended(self, ends: list[LaneEnd]) -> None:
        handed_back = [e for e in ends if e.result.stop_reason == StopReason.INTERRUPTED and e.lane not in self.lost]
        finished = [e for e in ends if e.result.stop_reason != StopReason.INTERRUPTED and e.lane not in self.lost]
        if handed_back:
            self._hand_back(handed_back)
        if finished:
            self._finish(finished)
        for end in ends:
            self.outcomes_by_lane.setdefault(end.lane, "lease_lost")

    def _hand_back(self, ends: list[LaneEnd]) -> None:
        """Save each lane's last chunk and checkpoint, release the jobs, and send them on together."""
        self._save([(e.lane, e.chunk) for e in ends])
        kept = [e for e in ends if e.lane not in self.lost]
        ids = [self.jobs[e.lane].id for e in kept]
        if not ids:
            return
        released = with_retries(lambda: job_store.release_jobs(self.state.db, ids, self.state.worker_id),
                                f"release {len(ids)} batched job(s)")
        if released and self.state.dispatcher is not None:
            self.state.dispatcher.send_message(Message([i for i in ids if i in released], self.jobs[0].queue))
        for e in kept:
            if self.jobs[e.lane].id in released:
                self.outcomes_by_lane[e.lane] = "released"
            else:
                self.lost.add(e.lane)

    def fail_unfinished(self, message: str) -> None:
        """End every lane still running failed with ``message``, in one transaction."""
        lanes = [lane for lane in range(len(self.jobs)) if lane not in self.outcomes_by_lane and lane not in self.lost]
        endings = [job_store.Ending(self.jobs[lane].id, JobStatus.FAILED, None, message) for lane in lanes]
        log.info("batch of %s failed: %s", self.jobs[0].id, message)
        done = with_retries(lambda: job_store.finish_jobs(self.state.db, self.state.worker_id, endings),
                            f"fail {len(endings)} batched job(s)")
        for lane in lanes:
            if self.jobs[lane].id in done:
                self.outcomes_by_lane[lane] = JobStatus.FAILED
            else:
                self.lost.add(lane)

    def _finish(self, ends: list[LaneEnd]) -> None:
        """End the lanes' jobs in one transaction, each with its result and last rows. A job whose
        cancel was requested ends cancelled, however it stopped."""
        me = self.state.worker_id
        endings, statuses = [], {}
        for e in ends:
            job_id = self.jobs[e.lane].id
            cancelled = e.result.stop_reason == StopReason.CANCELLED or self.cancel[e.lane]
            status = JobStatus.CANCELLED if cancelled else JobStatus.SUCCEEDED
            statuses[e.lane] = status
            payload, tensors = stored_result(self.state, e.result)
            endings.append(job_store.Ending(job_id, status, payload, None, (e.chunk.rows,), tensors))
        done = with_retries(lambda: job_store.finish_jobs(self.state.db, me, endings),
                            f"finish {len(endings)} batched job(s)")
        for e in ends:
            if self.jobs[e.lane].id in done:
                self.outcomes_by_lane[e.lane] = statuses[e.lane]
            else:
                self.lost.add(e.lane)
