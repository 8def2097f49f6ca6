"""The store: the only module that reads or writes SQL. Callers get frozen records."""
from service.store.db import (
           Conflict,
           Database,
           LeaseLost,
           NotFound,
           StoreError,
           StoreUnavailable,
)
from service.store.records import HistoryRecord, JobRecord, WorkerRecord
from service.store.rows import HistoryBatch
from service.store.status import FINISHED, JobStatus

__all__ = ["Conflict", "Database", "FINISHED", "HistoryBatch", "HistoryRecord", "JobRecord", "JobStatus", "LeaseLost", "NotFound",
           "StoreError", "StoreUnavailable", "WorkerRecord"]
