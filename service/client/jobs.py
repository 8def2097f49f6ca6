"""``JobHandle``: one job of the API, to wait for, cancel, and read the history and picture of."""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from service.client import columns
from service.client.handle import Handle, pandas_for
from service.client.http import Transport, retry_after
from service.client.progress import bar_if, job_progress
from service.client.status import FINISHED
from service.client.stream import HistoryStream
from service.client.tensors import from_npy

# Seconds one ``?wait=`` long-poll may ask for (the API's bound).
MAX_WAIT = 30.0
# Rows asked for per page of ``history_pages`` (``history`` and ``export`` stream one download).
JSON_PAGE_ROWS = 10_000
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
        ``limit``). ``fields`` picks among f, grad_norm, lr, x and grad (step always comes). NaN
        and infinities are floats.

        Read as one streamed CSV download (``history_arrays``), not JSON pages: each row is what
        the JSON pages hold, bit for bit (x and grad nested to x's shape).

        A pandas DataFrame when pandas can be imported and ``as_frame`` is not False (True
        insists on one): a column per field, x and grad a list per row; otherwise a list of
        dicts, one per row (x and grad left out of a row that has none stored)."""
        pandas = pandas_for(as_frame)
        if pandas is None:
            out: list[dict[str, Any]] = []
            with columns.gc_paused():  # nothing made here is garbage; see gc_paused
                for layout, block, dims in self.history_blocks(fields, every, start, limit):
                    out.extend(columns.rows(layout, block, dims))
            return out
        layout, parts, dims = self._parts(fields, every, start, limit)
        found = columns.arrays(layout, parts, dims)
        frame = {name: (values.tolist() if values.ndim > 1 else values) for name, values in found.items()}
        for name in columns.VECTORS:  # a row without x stored: NaN, as a frame of the JSON rows had it
            if name in frame and any(p.empty is not None for p in parts):
                kept = [r for p in parts for r in columns.rows(layout, p, dims)]
                frame[name] = [r.get(name, math.nan) for r in kept]
        return pandas.DataFrame(frame, columns=list(found))

    def history_arrays(self, fields: list[str] | str | None = None, every: int = 1, start: int = 0,
                       limit: int | None = None) -> dict[str, np.ndarray]:
        """The history as numpy arrays, a key per field (``history``'s rows, as columns): step
        (int64), f, grad_norm and lr (float64, one value a row), x and grad (float64, shaped
        ``(rows, *x's shape)`` as the JSON nests it; NaN for a row that has none stored).

        One streamed ``?format=csv`` download, parsed a large block at a time while it comes in;
        a download that breaks off is taken up again from the step after its last whole row
        (``service.client.stream``), or raises a ``DescentUnreachable``: never a short history."""
        layout, parts, dims = self._parts(fields, every, start, limit)
        if layout is None:
            return {}
        return columns.arrays(layout, parts, dims)

    def _parts(self, fields: list[str] | str | None, every: int, start: int,
               limit: int | None) -> tuple[Any, list[columns.Block], list[int]]:
        layout, parts, dims = None, [], []
        for layout, block, dims in self.history_blocks(fields, every, start, limit):
            parts.append(block)
        return layout, parts, dims

    def history_blocks(self, fields: list[str] | str | None = None, every: int = 1, start: int = 0,
                       limit: int | None = None) -> Iterator[tuple[columns.Layout, columns.Block, list[int]]]:
        """``history_arrays``'s download as it comes in: ``(layout, block, dims)`` for each large
        block of rows parsed (``service.client.columns``), dims being how x nests in a JSON row
        (asked of the API on a thread of its own as soon as the CSV's header has come)."""
        lines = HistoryStream(self.client, self.id, "csv", _field_names(fields), every, start, limit)
        asked: list[Future[list[int]]] = []
        with ThreadPoolExecutor(1, thread_name_prefix="history-dims") as pool:
            def ask(layout: columns.Layout) -> None:
                asked.append(pool.submit(self._dims, layout, start, every))

            for layout, block in columns.blocks(lines, on_header=ask):
                yield layout, block, asked[0].result()

    def _dims(self, layout: columns.Layout, start: int, every: int) -> list[int]:
        """How x (and grad) nest in the JSON rows: read from the first row's JSON (one small request)."""
        numel = layout.numel()
        vectors = [name for name in columns.VECTORS if name in layout.cols]
        if not vectors or numel == 0:
            return [numel]
        page = self.client.get_json(f"/v1/jobs/{self.id}/history", start=start, limit=1,
                                    every=every if every != 1 else None, fields=",".join(vectors))
        row = (page.get("rows") or [{}])[0]
        for name in vectors:
            if row.get(name) is not None:
                return columns.dims_of(row[name], numel)
        return [numel]

    def export(self, fmt: str = "csv", fields: list[str] | str | None = None, every: int = 1, start: int = 0,
               limit: int | None = None) -> Iterator[bytes]:
        """The history as the API's CSV (one header line) or NDJSON text, in bytes as they come:
        one streamed download of every row (or pages of at most 100,000 rows up to ``limit``),
        taken up again after a break from the step after its last whole row, so the bytes are
        the API's one download's, never short (a ``DescentUnreachable`` when it cannot be)."""
        yield from HistoryStream(self.client, self.id, fmt, _field_names(fields), every, start, limit)

    def x(self, as_torch: bool = False) -> Any:
        """The job's final x, fetched as .npy: a float64 numpy array in x0's shape (a torch tensor
        with ``as_torch``), bit for bit what the worker stored, however big."""
        return self._tensor("x", as_torch)

    def x0(self, as_torch: bool = False) -> Any:
        """The job's starting point, as ``x()`` gives the final x."""
        return self._tensor("x0", as_torch)

    def grad(self, as_torch: bool = False) -> Any:
        """The gradient at the final x (recorded with ``record.grad``, or ``steps: 0``), as ``x()``."""
        return self._tensor("grad", as_torch)

    def _tensor(self, name: str, as_torch: bool) -> Any:
        raw = self.client.request("GET", f"/v1/jobs/{self.id}/{name}", params={"format": "npy"},
                                  timeout=max(self.client.timeout, 120.0)).content
        array = from_npy(raw)
        if as_torch:
            import torch

            return torch.from_numpy(array)
        return array

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
