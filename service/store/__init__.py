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
from service.rows import HistoryRows
from service.status import FINISHED, JobStatus

__all__ = ["Conflict", "Database", "FINISHED", "HistoryRows", "JobRecord", "JobStatus", "LeaseLost", "NotFound",
           "StoreError", "StoreUnavailable", "WorkerRecord"]
