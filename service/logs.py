"""Log lines of the API and the workers: plain text by default, one JSON object per line with
``DESCENT_LOG_FORMAT=json``, and the job id on every line a job causes.

A worker names the jobs it works on with ``job_logging(ids)`` around the work (a context
variable, so the fleet thread's lines stay unnamed); the API names the job of a request to
``/v1/jobs/<id>/...``. A line then carries ``job_id`` (one job) or ``job_ids`` (a batch's).
Tokens are never logged: request lines carry the method, the path and the status, not headers.
"""
from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

FORMATS = ("text", "json")
_jobs: ContextVar[tuple[str, ...]] = ContextVar("descent_jobs", default=())
# A LogRecord's own attributes; anything else on a record came in ``extra`` and is written out.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "job_ids"}


@contextmanager
def job_logging(job_ids: Sequence[str]) -> Iterator[None]:
    """Every line logged in this context (this thread or task) names these jobs."""
    token = _jobs.set(tuple(job_ids))
    try:
        yield
    finally:
        _jobs.reset(token)


class _NameJobs(logging.Filter):
    """Puts the context's jobs on each record (unless the line named its own ``job_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_ids"):
            record.job_ids = (record.job_id,) if getattr(record, "job_id", None) else _jobs.get()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the jobs, and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        jobs = getattr(record, "job_ids", ())
        if len(jobs) == 1:
            line["job_id"] = jobs[0]
        elif jobs:
            line["job_ids"] = list(jobs)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and key != "job_id":
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextLines(logging.Formatter):
    """``time level logger [job ID] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(jobs)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        jobs = [repr(str(job))[1:-1] for job in getattr(record, "job_ids", ())]  # no line breaks from an id
        record.jobs = f" [job {jobs[0]}]" if len(jobs) == 1 else (f" [{len(jobs)} jobs, {jobs[0]}...]" if jobs else "")
        return super().format(record)


def configure(log_format: str, level: int | str = logging.INFO) -> None:
    """Send this process's log lines to stderr in ``log_format`` (``text`` or ``json``);
    ConfigError for another format."""
    from service.config import ConfigError

    if log_format not in FORMATS:
        raise ConfigError(f"DESCENT_LOG_FORMAT must be text or json, got {log_format[:40]!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else TextLines())
    handler.addFilter(_NameJobs())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
