"""Per-owner quotas, checked in the transaction that stores new jobs.

Three ceilings (``service.config.Quotas``): submissions in the last minute, jobs queued or
running, and history values held by all of an owner's jobs. A sweep is checked twice: ahead, from
its sizes, before it is expanded (``check_ahead``), and in the transaction that stores it. A job deleted within the minute
still counts as a submission (``remember_deleted``), so deleting cannot make room for more.
Each job reserves, when it is submitted, what its spec may record (so no running job can overrun
the disk quota) and keeps, once it has finished, only what it stored.
On PostgreSQL the check takes a per-owner advisory lock for the rest of its transaction, so two
concurrent submissions by one owner cannot both squeeze under a ceiling; SQLite transactions
already take the database's write lock up front.
"""
from __future__ import annotations

import math
from datetime import timedelta
from collections import defaultdict
from typing import Any, Sequence

from sqlalchemy import delete, func, insert, select, text, union, update

from service.config import Quotas
from service.errors import ErrorCode
from service.store.db import StoreError, as_utc, by_index, clock, one_of, utcnow
from service.store.chunks import stored_rows
from service.store.models import DeletedSubmission, Job
from service.status import JobStatus

WINDOW = timedelta(minutes=1)


class QuotaExceeded(StoreError):
    """An owner is over a quota; answered 429 with ``Retry-After``."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, message: str, retry_after: int, field: str) -> None:
        super().__init__(message, field=field, headers={"Retry-After": str(max(1, retry_after))})


def check_quotas(s: Any, owner: str, quotas: Quotas, jobs: int = 1, values: int = 0) -> None:
    """Raise QuotaExceeded unless ``owner`` may add ``jobs`` jobs reserving ``values`` values in
    one submission. Jobs stored in one transaction share their ``created_at`` (the database's
    transaction time), so the per-minute count is of submissions: a sweep's jobs are one."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:owner))"), {"owner": "descent-quota:" + owner})
    now = _now(s, dialect)
    since = now - WINDOW
    made = union(select(Job.created_at).where(Job.owner == owner, Job.created_at > since),
                 select(DeletedSubmission.created_at).where(DeletedSubmission.owner == owner,
                                                            DeletedSubmission.created_at > since)).subquery()
    recent, oldest = s.execute(select(func.count(), func.min(made.c.created_at))).one()
    if recent + 1 > quotas.submissions_per_minute:
        wait = (WINDOW - (as_utc(now) - as_utc(oldest))).total_seconds() if oldest else WINDOW.total_seconds()
        raise QuotaExceeded(f"owner '{owner}' made {recent:,} submissions in the last minute; the quota is "
                            f"{quotas.submissions_per_minute:,} (DESCENT_QUOTA_SUBMISSIONS_PER_MINUTE)",
                            math.ceil(wait), "quota.submissions_per_minute")
    active = s.scalar(select(func.count()).select_from(Job)
                      .where(Job.owner == owner, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))))
    if active + jobs > quotas.active_jobs:
        raise QuotaExceeded(f"owner '{owner}' has {active:,} jobs queued or running and this submission adds "
                            f"{jobs:,}; the quota is {quotas.active_jobs:,} (DESCENT_QUOTA_ACTIVE_JOBS); "
                            "submit again when some finish", 10, "quota.active_jobs")
    reserved = int(s.scalar(select(func.coalesce(func.sum(Job.reserved_values), 0)).where(Job.owner == owner)))
    if reserved + values > quotas.recorded_values:
        raise QuotaExceeded(f"owner '{owner}' has {reserved:,} history values stored or reserved and this "
                            f"submission may record {values:,}; the quota is {quotas.recorded_values:,} "
                            "(DESCENT_QUOTA_RECORDED_VALUES); record less (raise record.every) or ask an admin for more",
                            3600, "quota.recorded_values")


def check_ahead(db: Any, owner: str, quotas: Quotas, jobs: int, values: int) -> None:
    """``check_quotas`` in a short transaction of its own, storing nothing: a submission whose
    size is known before it is built (a sweep's job count from its grid and starts, its values
    from its first combination: ``service.spec.sweep.admit``) is refused before any of that work.
    The check in the storing transaction still decides (the owner may submit meanwhile)."""
    with db.session() as s:
        check_quotas(s, owner, quotas, jobs=jobs, values=values)


def remember_deleted(s: Any, job_ids: Sequence[str], dialect: str) -> None:
    """In the transaction that deletes ``job_ids``: keep the submissions among them made within
    the window (one row per owner and creation time: a sweep's jobs are one submission), and
    forget those that have left it."""
    since = _now(s, dialect) - WINDOW
    s.execute(delete(DeletedSubmission).where(DeletedSubmission.created_at <= since))
    made = (select(Job.owner, Job.created_at).where(one_of(Job.id, list(job_ids), dialect), Job.created_at > since)
            .distinct())
    s.execute(insert(DeletedSubmission).from_select(["owner", "created_at"], made))


def _now(s: Any, dialect: str) -> Any:
    """The database's clock on PostgreSQL (the one its timestamps are written by), this process's on SQLite."""
    return s.scalar(select(clock(dialect))) if dialect == "postgresql" else utcnow()


def values_per_row(spec: dict[str, Any], shape: list[int]) -> int:
    """Values one history row of a job holds: step's f, grad_norm and lr, and x and grad if recorded."""
    record = spec.get("record") or {}
    return 3 + math.prod(shape) * (int(record.get("x", True)) + int(bool(record.get("grad"))))


def settle_reservation(s: Any, job_id: str) -> None:
    """A finished job keeps, of its reservation, only what its history holds: an early stop, a
    failure or a cancel gives the rest back to its owner."""
    settle_reservations(s, [job_id])


def settle_reservations(s: Any, job_ids: Sequence[str]) -> None:
    """``settle_reservation`` for each of ``job_ids``: one statement per row width."""
    by_width: dict[int, list[str]] = defaultdict(list)
    for job_id, spec, shape in s.execute(select(Job.id, Job.spec, Job.shape).where(Job.id.in_(list(job_ids)))):
        by_width[values_per_row(spec, shape)].append(job_id)
    rows = stored_rows(Job.id, Job)
    with by_index(s, s.get_bind().dialect.name):
        for width, ids in by_width.items():
            s.execute(update(Job).where(Job.id.in_(ids)).values(reserved_values=rows * width)
                      .execution_options(synchronize_session=False))
