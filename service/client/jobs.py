"""``JobHandle``: one job of the API, to wait for, cancel, and read the history and picture of."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from service.client.errors import DescentClientError, DescentUnreachable, reason
from service.client.handle import Handle
from service.client.http import Transport, retry_after
from service.client.lines import Lines
from service.client.progress import bar_if, job_progress

FINISHED = ("succeeded", "failed", "cancelled")
# Seconds one ``?wait=`` long-poll may ask for (the API's bound).
MAX_WAIT = 30.0
# Rows asked for per page of history: JSON pages, and the CSV/NDJSON pieces of an export.
JSON_PAGE_ROWS = 10_000
TEXT_PAGE_ROWS = 100_000
# Seconds a delete may take to answer, at least (a million-row history takes seconds; a sweep more).
DELETE_TIMEOUT = 600.0
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _finite(value: Any) -> Any:
    """The API's JSON spellings of NaN and the infinities ("NaN", "Infinity") as floats again."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _field_names(fields: list[str] | str | None) -> str | None:
    return ",".join(fields) if isinstance(fields, (list, tuple)) else fields


class JobHandle(Handle):
    """One job of the API. ``json`` is the job as last read (``refresh()`` reads it again)."""

    PATH, SHOWN = "/v1/jobs", "status"

    def __init__(self, client: Transport, job_id: str, job: dict[str, Any] | None = None) -> None:
        super().__init__(client, job_id, job)

    def _current(self) -> dict[str, Any]:
        job = self._json
        return job if job is not None and job.get("status") in FINISHED else self.refresh()

    @property
    def status(self) -> str:
        """queued, running, succeeded, failed or cancelled: read now unless already finished."""
        return str(self._current()["status"])

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def result(self) -> dict[str, Any] | None:
        """The job's result (x, f, grad_norm, steps, stop_reason, ...); None until it has one."""
        return self._current().get("result")

    def wait(self, timeout: float | None = None, progress: bool = False) -> dict[str, Any]:
        """Wait until the job has finished; returns the finished job.

        Long-polls ``GET /v1/jobs/<id>?wait=`` (30 s at a time), pausing as a ``Retry-After`` asks
        when the API is at its bound on waiting requests. With ``progress`` it asks every second
        and draws a progress bar on stderr (steps done of all, and f, from the job's ``progress``).
        After ``timeout`` seconds (None: no limit) it returns the job as it then is, unfinished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with bar_if(progress) as bar:
            while True:
                left = MAX_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
                ask = min(left, 1.0 if bar else MAX_WAIT)
                resp = self.client.request("GET", f"/v1/jobs/{self.id}", params={"wait": f"{ask:.3f}"},
                                           timeout=ask + self.client.timeout)
                self._json = job = resp.json()
                if bar:
                    bar.draw(*job_progress(job))
                if job["status"] in FINISHED or (deadline is not None and time.monotonic() >= deadline):
                    return job
                pause = retry_after(resp)
                if pause:  # the API answered at once: it serves its most waiters
                    time.sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))

    def cancel(self) -> dict[str, Any]:
        """Ask the job to stop (a queued one is cancelled at once, a running one within about a
        second); returns the job. A finished job answers 409 (a DescentClientError)."""
        self._json = self.client.request_json("POST", f"/v1/jobs/{self.id}/cancel")
        return self._json

    def delete(self) -> dict[str, Any]:
        """Delete the job: its history, tags, checkpoint and data (a queued or running job is
        cancelled first). Returns what went: ``{"id", "deleted": "job", "removed": {"jobs",
        "history_rows", "data_tensors", "sweeps"}}``. Sent once, never retried: a second delete of
        the job is a 404 (a DescentClientError), as for a job that never was."""
        return self.client.request_json("DELETE", f"/v1/jobs/{self.id}",  # type: ignore[no-any-return]
                                        timeout=max(self.client.timeout, DELETE_TIMEOUT))

    def history_pages(self, fields: list[str] | str | None = None, every: int = 1, start: int = 0,
                      limit: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """The history's JSON pages, in step order, as the API writes them (NaN as "NaN")."""
        names = _field_names(fields)
        given = 0
        next_start: int | None = start
        while next_start is not None and (limit is None or given < limit):
            size = JSON_PAGE_ROWS if limit is None else min(JSON_PAGE_ROWS, limit - given)
            page = self.client.get_json(f"/v1/jobs/{self.id}/history", start=next_start, limit=size,
                                        every=every if every != 1 else None, fields=names or None)
            rows = page["rows"]
            given += len(rows)
            yield rows
            next_start = page.get("next_start")

    def history(self, fields: list[str] | str | None = None, every: int = 1, start: int = 0,
                limit: int | None = None, as_frame: bool | None = None) -> Any:
        """Every history row (from ``start``, the steps that are multiples of ``every``, at most
        ``limit``), however many pages that takes. ``fields`` picks among f, grad_norm, lr, x and
        grad (step always comes). NaN and infinities are floats again.

        A pandas DataFrame when pandas can be imported and ``as_frame`` is not False (True
        insists on one); otherwise a list of dicts."""
        rows = [_finite(row) for page in self.history_pages(fields, every, start, limit) for row in page]
        if as_frame is False:
            return rows
        try:
            import pandas
        except ImportError:
            if as_frame:
                raise
            return rows
        return pandas.DataFrame(rows)

    def export(self, fmt: str = "csv", fields: list[str] | str | None = None, every: int = 1, start: int = 0,
               limit: int | None = None) -> Iterator[bytes]:
        """The history as the API's CSV (one header line) or NDJSON text, in bytes as they come,
        page after page of at most 100,000 rows until the last row (or ``limit`` rows)."""
        if fmt not in ("csv", "ndjson"):
            raise ValueError("fmt must be 'csv' or 'ndjson'")
        names = _field_names(fields)
        given, first_page = 0, True
        while limit is None or given < limit:
            size = TEXT_PAGE_ROWS if limit is None else min(TEXT_PAGE_ROWS, limit - given)
            params = {"format": fmt, "start": start, "limit": size, **({"every": every} if every != 1 else {}),
                      **({"fields": names} if names else {})}
            resp = self.client.request("GET", f"/v1/jobs/{self.id}/history", params=params, stream=True,
                                       timeout=max(self.client.timeout, 300.0))
            lines = Lines(skip_header=fmt == "csv" and not first_page)
            try:
                for piece in resp.iter_content(chunk_size=1 << 16):
                    out = lines.feed(piece)
                    if out:
                        yield out
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                raise DescentUnreachable(f"the history download from {self.client.url} broke off "
                                         f"({reason(exc)})") from None
            finally:
                resp.close()
            if lines.partial:
                raise DescentClientError(f"the history download from {self.client.url} ended inside a row")
            rows = lines.count - (1 if fmt == "csv" else 0)
            given += rows
            first_page = False
            if rows < size or lines.last_step is None:
                return
            start = lines.last_step + 1

    def plot(self, kind: str = "contour", path: str | Path | None = None) -> bytes | Path:
        """The job's picture as PNG (``kind`` contour: f's contours with the path on them; loss: f
        by step): its bytes, or, given ``path``, written there (the path is returned)."""
        png = self.client.request("GET", f"/v1/jobs/{self.id}/plot.png", params={"kind": kind},
                                  timeout=max(self.client.timeout, 120.0)).content
        if path is None:
            return png
        target = Path(path)
        target.write_bytes(png)
        return target
