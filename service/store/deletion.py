"""Deleting jobs, sweeps and histories, and the retention clean-up that runs the same code.

A delete is three steps, each in short transactions:

1. **Fence**: the job rows locked, a queued or running job is cancelled and every job's
   ``reserved_values`` drops to 0 (quotas free at once). Every history write is fenced on
   ``worker = me AND status = running``, so after this commits no row can be added; the worker
   learns at its next chunk (``LeaseLost``) and drops the job.
2. **Purge** the history in batches of whole chunks of about ``batch_rows`` rows (a long history
   by ranges of first steps, read from the primary key), so no transaction holds the database
   for long.
3. **Remove** the job rows with their tags, data links and binary results, the owner's data
   tensors no job reads any more (``data.forget_unread``: each owner's own copies, so
   ``removed.data_tensors`` depends on nothing another owner stores) and, for a sweep, its row.

A delete interrupted after step 1 leaves the job cancelled with part of its history and no quota
held; deleting it again (or the job retention) finishes the work. PostgreSQL reuses the freed
pages after a VACUUM (``benchmarks/delete_space.py``); SQLite at once.

Retention (``apply_retention``): finished jobs past the job retention are deleted as above, with the sweeps
left empty and any unread data tensor; finished jobs past the history retention lose their
history (the job stays, ``reserved_values`` 0, ``history_dropped_at`` set). ``exclusive`` runs one
clean-up at a time across the fleet.
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterator, Sequence

from sqlalchemy import and_, delete, exists, func, select, text, update
from sqlalchemy.exc import IntegrityError

from service.store import counters, data, quotas
from service.store.db import Database, NotFound, as_utc, clock, one_of, owned_row, utcnow
from service.store.chunks import rows_of
from service.store.models import HistoryChunk, Job, JobData, JobTag, JobTensor, Sweep
from service.status import FINISHED, JobStatus

# Ids are UUIDs this store made; any other text names nothing and costs no query.
_ID = re.compile(r"[0-9a-f-]{1,36}")
# History rows one purge transaction deletes, at most (benchmarks/delete_space.py): on PostgreSQL
# 5,000 rows a transaction deleted a 1,000,001-row history in 2.3-3.7 s (about the time it took to
# write) while other jobs' 100-row chunk writes kept a p99 of 20-41 ms (10-27 ms without the
# delete); 20,000 was faster (1.4-2.4 s) at a p99 of 56-67 ms. On SQLite every writer waits for a
# batch, so batches are smaller and each is followed by a pause as long as it took (2,000 rows:
# 4.5 s, chunk writes' p99 24 ms).
BATCH_ROWS = {"postgresql": 5_000, "sqlite": 2_000}
# Jobs whose rows are removed in one transaction, at most.
JOB_GROUP = 500
# On SQLite, after each purge batch, sleep this fraction of the batch's own time (other writers
# get the single write lock in between).
SQLITE_YIELD = 1.0
# The one clean-up across the fleet: a PostgreSQL advisory lock on this key's hash.
LOCK_NAME = "descent-retention"
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@dataclass
class Removed:
    """What a delete or a clean-up removed."""

    jobs: int = 0
    history_rows: int = 0
    data_tensors: int = 0
    sweeps: int = 0

    def add(self, other: Removed) -> Removed:
        self.jobs += other.jobs
        self.history_rows += other.history_rows
        self.data_tensors += other.data_tensors
        self.sweeps += other.sweeps
        return self

    def as_json(self) -> dict[str, int]:
        return {"jobs": self.jobs, "history_rows": self.history_rows, "data_tensors": self.data_tensors,
                "sweeps": self.sweeps}


# --- delete -------------------------------------------------------------------------------------

def delete_job(db: Database, job_id: str, owner: str | None = None, batch_rows: int | None = None) -> Removed:
    """Delete the job (only ``owner``'s when given: another's is NotFound, as an unknown id is),
    its history, tags, checkpoint and data links, and the owner's data tensors no other job of the owner reads; a
    queued or running job is cancelled first and its worker fenced out."""
    with db.session() as s:
        owned_row(s, Job, job_id, owner, _ID, "job", for_update=True)
        _fence(s, db.dialect, Job.__table__.c.id == job_id)
    removed = remove_jobs(db, [job_id], batch_rows)
    if not removed.jobs:  # a delete of the same job, running alongside, removed it first
        raise NotFound(f"no job with id {job_id[:80]!r}")
    return removed


def delete_sweep(db: Database, sweep_id: str, owner: str | None = None, batch_rows: int | None = None) -> Removed:
    """``delete_job`` for every job of the sweep, then the sweep itself."""
    jobs = Job.__table__
    with db.session() as s:
        owned_row(s, Sweep, sweep_id, owner, _ID, "sweep", for_update=True)
        # the job rows locked in id order first, the order a batch's lease renewal locks them in
        # (``id = ANY(...)``), so the fence and a running batch never deadlock
        ids = list(s.scalars(select(jobs.c.id).where(jobs.c.sweep_id == sweep_id).order_by(jobs.c.id)
                             .with_for_update()))
        _fence(s, db.dialect, jobs.c.sweep_id == sweep_id)
    removed = remove_jobs(db, ids, batch_rows)
    with db.session() as s:
        removed.sweeps += s.execute(delete(Sweep.__table__).where(Sweep.__table__.c.id == sweep_id)).rowcount or 0
    if not removed.sweeps:  # a delete of the same sweep, running alongside, removed it first
        raise NotFound(f"no sweep with id {sweep_id[:80]!r}")
    return removed


def _fence(s: Any, dialect: str, which: Any) -> int:
    """In the caller's transaction: cancel the queued and running jobs ``which`` selects (no
    worker may write for them again) and give every selected job's reservation back. Returns how
    many were cancelled (counted as ended, cancelled)."""
    jobs = Job.__table__
    cancelled = len(s.execute(
        update(jobs).where(which, jobs.c.status.in_(ACTIVE))
        .values(status=JobStatus.CANCELLED.value, cancel_requested=True, finished_at=clock(dialect), worker=None,
                lease_expires_at=None)
        .returning(jobs.c.id)).all())
    s.execute(update(jobs).where(which, jobs.c.reserved_values != 0).values(reserved_values=0))
    if cancelled:
        counters.ended(s, counters.API_SOURCE, JobStatus.CANCELLED, cancelled)
    return cancelled


def remove_jobs(db: Database, job_ids: Sequence[str], batch_rows: int | None = None) -> Removed:
    """Purge the histories of ``job_ids`` (finished or fenced jobs: nothing may write for them)
    in batches, then remove their rows, a group of jobs per transaction."""
    removed = Removed()
    for first in range(0, len(job_ids), JOB_GROUP):
        group = list(job_ids[first:first + JOB_GROUP])
        removed.history_rows += purge_history(db, group, batch_rows)
        jobs, history = Job.__table__, HistoryChunk.__table__
        with db.session() as s:
            # none is expected (the history is frozen): a last guard, so no row outlives its job
            removed.history_rows += _deleted(s, one_of(history.c.job_id, group, db.dialect))
            # whose tensors these jobs read (each owner's own copies): only theirs may become
            # unread, so the count depends on nothing another owner stores
            read = data.owners_reading(s, group, db.dialect)
            # tags, data links and binary results go by cascade too; deleted here as well, so a SQLite connection
            # whose foreign keys are off (the pragma is per connection) leaves none behind
            for linked in (JobTag.__table__, JobData.__table__, JobTensor.__table__):
                s.execute(delete(linked).where(one_of(linked.c.job_id, group, db.dialect)))
            quotas.remember_deleted(s, group, db.dialect)  # still a submission this minute
            removed.jobs += s.execute(delete(jobs).where(one_of(jobs.c.id, group, db.dialect))).rowcount or 0
            removed.data_tensors += _forget_unread(s, read) if read else 0
    return removed


def _forget_unread(s: Any, owners: Sequence[str] | None) -> int:
    """``data.forget_unread`` (of ``owners``' tensors; None: of everyone's) in a
    savepoint: on PostgreSQL a job of the same owner stored meanwhile may have just linked a tensor
    it finds unread (its foreign key then refuses the delete); that tensor stays, read, and the
    rest of this transaction goes on."""
    try:
        with s.begin_nested():
            return data.forget_unread(s, owners)
    except IntegrityError:
        return 0


def purge_history(db: Database, job_ids: Sequence[str], batch_rows: int | None = None) -> int:
    """Delete every history row of ``job_ids`` (jobs whose history no one writes any more) in
    transactions of about ``batch_rows`` rows at most (whole chunks); returns how many went."""
    if not job_ids:
        return 0
    batch = batch_rows or BATCH_ROWS.get(db.dialect, 2_000)
    history = HistoryChunk.__table__
    with db.session() as s:
        counts = {job_id: (int(n), int(rows)) for job_id, n, rows in s.execute(
            select(history.c.job_id, func.count(), func.sum(history.c.n_rows))
            .where(one_of(history.c.job_id, list(job_ids), db.dialect)).group_by(history.c.job_id)).all()}
    total, small, small_rows = 0, [], 0
    for job_id in job_ids:
        chunks, rows = counts.get(job_id, (0, 0))
        if not rows:
            continue
        if rows > batch:
            total += _purge_long(db, job_id, max(1, batch * chunks // rows))
            continue
        if small_rows + rows > batch:
            total += _purge_whole(db, small)
            small, small_rows = [], 0
        small.append(job_id)
        small_rows += rows
    if small:
        total += _purge_whole(db, small)
    return total


def _deleted(s: Any, where: Any) -> int:
    """Delete the chunks ``where`` chooses; how many rows they held."""
    history = HistoryChunk.__table__
    return sum(int(n) for n in s.execute(delete(history).where(where).returning(history.c.n_rows)).scalars())


def _purge_whole(db: Database, job_ids: list[str]) -> int:
    history = HistoryChunk.__table__
    count, _ = _timed(db, lambda s: (_deleted(s, one_of(history.c.job_id, job_ids, db.dialect)), None))
    return count


def _purge_long(db: Database, job_id: str, batch: int) -> int:
    """A long history by ranges of ``batch`` chunks, from the first step on: each range is read
    from the index (its last chunk) and deleted between two bounds, so no scan crosses the dead
    rows of the ranges before it."""
    total, after = 0, -1
    while True:
        count, last = _timed(db, lambda s, after=after: _delete_range(s, job_id, after, batch))
        total += count
        if last is None:
            return total
        after = last


def _delete_range(s: Any, job_id: str, after: int, batch: int) -> tuple[int, int | None]:
    """Delete the job's first ``batch`` chunks starting past step ``after``; (the rows they held,
    the first step of the range's last chunk, None when the chunks left were fewer)."""
    history = HistoryChunk.__table__
    mine = and_(history.c.job_id == job_id, history.c.first_step > after)
    last = s.scalar(select(history.c.first_step).where(mine).order_by(history.c.first_step).offset(batch - 1).limit(1))
    which = mine if last is None else and_(mine, history.c.first_step <= last)
    return _deleted(s, which), None if last is None else int(last)


def _timed(db: Database, statement: Any) -> tuple[int, Any]:
    """Run ``statement(session)`` (giving the rows it deleted and a value) in its own transaction;
    (the rows, the value). On SQLite, then pause as long as it took, so other writers get the
    write lock in between."""
    began = time.monotonic()
    with db.session() as s:
        count, value = statement(s)
    if db.dialect == "sqlite" and count:
        time.sleep(min(0.5, (time.monotonic() - began) * SQLITE_YIELD))
    return count, value


# --- retention ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expired:
    """A finished job the clean-up removes (its rows: history rows it holds now)."""

    id: str
    owner: str
    status: str
    finished_at: datetime | None
    rows: int
    sweep_id: str | None


@dataclass
class RetentionReport:
    """What one clean-up removed (or, in a dry run, would remove): the jobs deleted, the jobs whose
    history was dropped, and the totals."""

    deleted: list[Expired] = field(default_factory=list)
    pruned: list[Expired] = field(default_factory=list)
    removed: Removed = field(default_factory=Removed)
    dry_run: bool = False


def apply_retention(db: Database, history_seconds: float | None, job_seconds: float | None, dry_run: bool = False,
                    page: int = JOB_GROUP, batch_rows: int | None = None,
                    now: datetime | None = None) -> RetentionReport:
    """One clean-up: delete the jobs finished more than ``job_seconds`` ago (and the sweeps left
    with no job), then drop the histories of the jobs finished more than ``history_seconds`` ago;
    None leaves that part off. With ``dry_run`` nothing changes and the answer says what would go.
    The caller holds ``exclusive`` (workers and ``descent gc`` do)."""
    out = RetentionReport(dry_run=dry_run)
    now = now or _now(db)
    if job_seconds is not None:
        cutoff = now - timedelta(seconds=job_seconds)
        for expired in _pages(db, cutoff, page, with_history=False):
            out.deleted.extend(expired)
            ids = [e.id for e in expired]
            if dry_run:
                out.removed.jobs += len(ids)
                out.removed.history_rows += sum(e.rows for e in expired)
            else:
                out.removed.add(remove_jobs(db, ids, batch_rows))
        out.removed.sweeps += _empty_sweeps(db, cutoff, dry_run)
        if not dry_run:  # any tensor no job reads, whoever's (none is expected: each delete removes its own)
            with db.session() as s:
                out.removed.data_tensors += _forget_unread(s, None)
    if history_seconds is not None:
        cutoff = now - timedelta(seconds=history_seconds)
        deleted = {e.id for e in out.deleted}
        for expired in _pages(db, cutoff, page, with_history=True, skip=deleted if dry_run else set()):
            out.pruned.extend(expired)
            if dry_run:
                out.removed.history_rows += sum(e.rows for e in expired)
                continue
            ids = [e.id for e in expired]
            out.removed.history_rows += purge_history(db, ids, batch_rows)
            jobs = Job.__table__
            with db.session() as s:  # a finished job keeps, of its reservation, what it holds: nothing now
                s.execute(update(jobs).where(one_of(jobs.c.id, ids, db.dialect))
                          .values(reserved_values=0, history_dropped_at=clock(db.dialect)))
    return out


def _now(db: Database) -> datetime:
    """The database's clock on PostgreSQL (every timestamp is the server's), this process's on SQLite."""
    if db.dialect != "postgresql":
        return utcnow()
    with db.session() as s:
        return as_utc(s.scalar(select(func.now())))  # type: ignore[return-value]


def _pages(db: Database, cutoff: datetime, page: int, with_history: bool,
           skip: set[str] | frozenset[str] = frozenset()) -> Iterator[list[Expired]]:
    """Pages of the finished jobs that ended before ``cutoff``, oldest first (with
    ``with_history``: only those still holding a history), each with its rows counted. Keyset
    pagination on (finished_at, id), so a page whose jobs were just removed is never read again."""
    jobs, history = Job.__table__, HistoryChunk.__table__
    after: tuple[datetime, str] | None = None
    while True:
        query = (select(jobs.c.id, jobs.c.owner, jobs.c.status, jobs.c.finished_at, jobs.c.sweep_id)
                 .where(jobs.c.status.in_([s.value for s in FINISHED]), jobs.c.finished_at < cutoff)
                 .order_by(jobs.c.finished_at, jobs.c.id).limit(page))
        if with_history:  # reserving values, or (made before revision 0003 reserved any) holding rows
            query = query.where(jobs.c.history_dropped_at.is_(None),
                                (jobs.c.reserved_values > 0) | exists().where(history.c.job_id == jobs.c.id))
        if after is not None:
            query = query.where((jobs.c.finished_at > after[0]) | and_(jobs.c.finished_at == after[0],
                                                                       jobs.c.id > after[1]))
        with db.session() as s:
            rows = s.execute(query).all()
            ids = [r.id for r in rows]
            counts = rows_of(s, ids) if ids else {}
        if not rows:
            return
        after = (rows[-1].finished_at, rows[-1].id)
        found = [Expired(r.id, r.owner, r.status, as_utc(r.finished_at), int(counts.get(r.id, 0)), r.sweep_id)
                 for r in rows if r.id not in skip]
        if found:
            yield found
        if len(rows) < page:
            return


def _empty_sweeps(db: Database, cutoff: datetime, dry_run: bool) -> int:
    """Delete the sweeps made before ``cutoff`` that hold no job but finished ones that ended
    before it (none, once those are deleted); in a dry run, count them."""
    sweeps, jobs = Sweep.__table__, Job.__table__
    kept = exists().where(jobs.c.sweep_id == sweeps.c.id,
                          ~and_(jobs.c.status.in_([s.value for s in FINISHED]), jobs.c.finished_at < cutoff))
    which = and_(sweeps.c.created_at < cutoff, ~kept)
    with db.session() as s:
        if dry_run:
            return int(s.scalar(select(func.count()).select_from(sweeps).where(which)) or 0)
        return s.execute(delete(sweeps).where(which)).rowcount or 0


@contextmanager
def exclusive(db: Database) -> Iterator[bool]:
    """Whether this process may run the clean-up now (True) or another one runs it (False): on
    PostgreSQL a session advisory lock (on a connection of its own, in autocommit, so no open
    transaction holds back VACUUM); on SQLite a lock on a file beside the database (all its
    processes run on one machine). Held until the block ends."""
    if db.dialect == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": LOCK_NAME}).scalar())
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": LOCK_NAME})
        return
    path = _sqlite_path(db.url)
    if path is None:  # an in-memory database: one process
        yield True
        return
    fd = os.open(path + ".retention.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _sqlite_path(url: str) -> str | None:
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return None if not path or path == ":memory:" else path
