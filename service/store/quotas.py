"""Per-owner quotas, checked in the transaction that stores new jobs.

Three ceilings (``service.config.Quotas``): jobs submitted in the last minute, jobs queued or
running, and history values reserved by all of an owner's jobs (each job reserves, when it is
submitted, what its spec may record: a disk quota that cannot be overrun by a running job).
On PostgreSQL the check takes a per-owner advisory lock for the rest of its transaction, so two
concurrent submissions by one owner cannot both squeeze under a ceiling; SQLite transactions
already take the database's write lock up front.
"""
from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text

from service.config import Quotas
from service.errors import ErrorCode
from service.store.db import StoreError, as_utc, utcnow
from service.store.models import Job
from service.store.status import JobStatus

WINDOW = timedelta(minutes=1)


class QuotaExceeded(StoreError):
    """An owner is over a quota; answered 429 with ``Retry-After``."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, message: str, retry_after: int, field: str) -> None:
        super().__init__(message, field=field, headers={"Retry-After": str(max(1, retry_after))})


def check_quotas(s: Any, owner: str, quotas: Quotas, jobs: int = 1, values: int = 0) -> None:
    """Raise QuotaExceeded unless ``owner`` may add ``jobs`` jobs reserving ``values`` values."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:owner))"), {"owner": "descent-quota:" + owner})
    now = utcnow()
    recent, oldest = s.execute(select(func.count(), func.min(Job.created_at))
                               .where(Job.owner == owner, Job.created_at > now - WINDOW)).one()
    if recent + jobs > quotas.submissions_per_minute:
        wait = WINDOW.total_seconds() - (now - as_utc(oldest)).total_seconds() if oldest else WINDOW.total_seconds()
        raise QuotaExceeded(f"owner '{owner}' submitted {recent:,} jobs in the last minute; the quota is "
                            f"{quotas.submissions_per_minute:,} (DESCENT_QUOTA_SUBMISSIONS_PER_MINUTE)",
                            math.ceil(wait), "quota.submissions_per_minute")
    active = s.scalar(select(func.count()).select_from(Job)
                      .where(Job.owner == owner, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))))
    if active + jobs > quotas.active_jobs:
        raise QuotaExceeded(f"owner '{owner}' has {active:,} jobs queued or running; the quota is "
                            f"{quotas.active_jobs:,} (DESCENT_QUOTA_ACTIVE_JOBS); submit again when some finish",
                            10, "quota.active_jobs")
    reserved = int(s.scalar(select(func.coalesce(func.sum(Job.reserved_values), 0)).where(Job.owner == owner)))
    if reserved + values > quotas.recorded_values:
        raise QuotaExceeded(f"owner '{owner}' has {reserved:,} history values stored or reserved and this job "
                            f"may record {values:,}; the quota is {quotas.recorded_values:,} "
                            "(DESCENT_QUOTA_RECORDED_VALUES); record less (raise record.every) or ask an admin for more",
                            3600, "quota.recorded_values")
