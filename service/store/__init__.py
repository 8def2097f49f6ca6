"""The store: the only module that reads or writes SQL. Callers get frozen records."""
from service.store.db import (
           Conflict,
           Database,
           LeaseLost,
           NotFound,
           StoreError,
           StoreUnavailable,
)
from service.store.records import JobRecord, WorkerRecord
from service.batch import HistoryBatch
from service.status import FINISHED, JobStatus

__all__ = ["Conflict", "Database", "FINISHED", "HistoryBatch", "JobRecord", "JobStatus", "LeaseLost", "NotFound",
           "StoreError", "StoreUnavailable", "WorkerRecord"]
