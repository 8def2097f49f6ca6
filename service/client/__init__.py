"""A Python client of the Descent API: submit jobs and sweeps, wait for them, read their histories.

    from service.client import Client

    client = Client()                       # DESCENT_URL and DESCENT_TOKEN, as the descent command
    job = client.submit({"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500,
                         "optimizer": {"name": "sgd", "lr": 0.001}})
    final = job.wait(progress=True)         # a one-line progress bar on stderr; the finished job
    rows = job.history(fields=["x", "f"])   # every row (a pandas DataFrame when pandas is installed)
    cols = job.history_arrays()             # {"step", "f", "grad_norm", "lr", "x": (rows, *shape)} numpy
    job.plot(path="contour.png")
    job.delete()                            # the job, its history and data; client.sweep(ID).delete() too

A history is read as one streamed ``?format=csv`` download, parsed into numpy columns a large
block at a time while it comes in (``service.client.stream``, ``service.client.columns``); one
that breaks off is taken up again from the step after its last whole row, or is an error, never a
short history.

Every failure is a ``DescentClientError``: the API's own message for an error answer (``.status``
is the HTTP status, ``.code`` and ``.field`` the API's error code and field), or, for an API that
cannot be reached, a ``DescentUnreachable`` whose one-line message names the URL.

Requests are retried only where that is safe (``service.client.http``): GETs, and POSTs that
carry an ``Idempotency-Key`` (``submit`` and ``submit_sweep`` always send one: the one given as
``idempotency_key``, else one generated here, so a submit retried after a lost connection makes one
job, not two). They are retried for 30 s in all by default (``retry_seconds``, or
DESCENT_RETRY_SECONDS), with growing, jittered pauses and as ``Retry-After`` asks, so they ride out
an API restart. A cancel or a delete is sent once. A submit that still gets no answer raises a
``DescentUnreachable`` whose ``idempotency_key`` (named in its message too) is the key it was sent
with: submit again with that key, and the job the lost try may have made is the one answered.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from service.client.errors import DescentClientError, DescentUnreachable
from service.client.http import Transport
from service.client.jobs import JobHandle
from service.client.status import FINISHED, Status, StopReason
from service.client.tensors import NPY, npy_bytes
from service.client.progress import ProgressBar, job_progress
from service.client.sweeps import SweepHandle

__all__ = ["FINISHED", "Client", "DescentClientError", "DescentUnreachable", "JobHandle", "ProgressBar", "Status",
           "StopReason", "SweepHandle", "job_progress"]

# Jobs asked for per page of GET /v1/jobs.
JOBS_PAGE = 1000


class Client(Transport):
    """A connection to one Descent API (``url``, ``token``, ``timeout``, ``retry_seconds`` and
    ``retries`` as ``Transport`` takes them), and what can be asked of it: jobs, sweeps, the catalog."""

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any] | str | bytes, idempotency_key: str | None = None, *,
               x0: Any = None, data: dict[str, Any] | None = None) -> JobHandle:
        """Submit a job spec (a dict, or JSON text sent as it is); the new job's handle. ``x0`` and
        ``data`` (arrays: numpy, torch or nested lists) go as .npy uploads, not JSON text; the spec
        then names no x0 (nor those data names).

        An Idempotency-Key (a random one unless given) goes with it, so the retries after a lost
        connection, or a resubmit with the same key, answer with the same job. When the API gives
        no answer even after the retries, the ``DescentUnreachable`` carries that key
        (``.idempotency_key``): submit again with it to get one job, never two."""
        key = idempotency_key or uuid.uuid4().hex
        arrays = {**({"x0": x0} if x0 is not None else {}), **{f"data.{k}": v for k, v in (data or {}).items()}}
        files = {part: (f"{part}.npy", npy_bytes(values), NPY) for part, values in arrays.items()} or None
        job = self.request_json("POST", "/v1/jobs", body=spec, headers={"Idempotency-Key": key}, files=files)
        return JobHandle(self, job["id"], job)

    def job(self, job_id: str) -> JobHandle:
        """The handle of an existing job, read once (a DescentClientError with status 404 if there
        is none, or it is another owner's)."""
        handle = JobHandle(self, job_id)
        handle.refresh()
        return handle

    def jobs(self, limit: int | None = None, **filters: Any) -> Iterator[JobHandle]:
        """Every job matching ``filters`` (at most ``limit``), page after page of GET /v1/jobs.

        Filters are the API's: ``status``, ``name``, ``tag`` ("key:value"), ``order`` ("asc" or
        "desc"), ``stop_reason``, ``created_after``, ``created_before`` (ISO-8601). Each handle
        carries the job as listed (``.json``)."""
        cursor, given = None, 0
        while limit is None or given < limit:
            page_size = JOBS_PAGE if limit is None else min(JOBS_PAGE, limit - given)
            page = self.get_json("/v1/jobs", limit=page_size, cursor=cursor, **filters)
            for job in page["jobs"][:page_size]:
                given += 1
                yield JobHandle(self, job["id"], job)
            cursor = page.get("next_cursor")
            if not cursor or not page["jobs"]:
                return

    # -- sweeps -----------------------------------------------------------------------------
    def submit_sweep(self, spec: dict[str, Any] | str | bytes, idempotency_key: str | None = None) -> SweepHandle:
        """Submit a sweep ({base, grid, starts, ...}); its handle. Sent with an Idempotency-Key (a
        random one unless given), carried by the error as ``submit``'s is."""
        key = idempotency_key or uuid.uuid4().hex
        sweep = self.request_json("POST", "/v1/sweeps", body=spec, headers={"Idempotency-Key": key},
                                  timeout=max(self.timeout, 600.0))
        return SweepHandle(self, sweep["id"], sweep)

    def sweep(self, sweep_id: str) -> SweepHandle:
        """The handle of an existing sweep, read once."""
        handle = SweepHandle(self, sweep_id)
        handle.refresh()
        return handle

    # -- the catalog ------------------------------------------------------------------------
    def objectives(self) -> list[dict[str, Any]]:
        """The named objectives: name, formula, params, default_start, minima, ..."""
        return list(self.get_json("/v1/objectives")["objectives"])

    def workers(self) -> list[dict[str, Any]]:
        """The fleet (admins only): each worker's id, host, queues, device, state (alive or
        lost), current job and jobs done."""
        return list(self.get_json("/v1/workers")["workers"])

    def optimizers(self) -> list[dict[str, Any]]:
        """The allowed optimisers: name, torch class, arguments with their defaults."""
        return list(self.get_json("/v1/optimizers")["optimizers"])
