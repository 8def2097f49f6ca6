"""``SweepHandle``: one sweep of the API, to wait for, summarise, list the jobs of, or cancel."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from service.client.handle import Handle, pandas_for
from service.client.http import Transport
from service.client.jobs import DELETE_TIMEOUT, JobHandle
from service.client.progress import bar_if
from service.client.status import UNFINISHED


def pages(client: Transport, path: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of a cursor-paged list at ``path`` (its items under ``key``), until the last."""
    cursor = None
    while True:
        page = client.get_json(path, **params, cursor=cursor)
        yield page
        cursor = page.get("next_cursor")
        if not cursor or not page[key]:
            return


class SweepHandle(Handle):
    """One sweep of the API. ``json`` is the sweep as last read: counts by status and a first
    page of its summary."""

    PATH, SHOWN = "/v1/sweeps", "jobs"

    def __init__(self, client: Transport, sweep_id: str, sweep: dict[str, Any] | None = None) -> None:
        super().__init__(client, sweep_id, sweep)

    @property
    def counts(self) -> dict[str, int]:
        """Its jobs by status, read now."""
        return dict(self.refresh()["counts"])

    def wait(self, timeout: float | None = None, progress: bool = False, poll: float = 1.0) -> dict[str, Any]:
        """Wait until no job of the sweep is queued or running (read every ``poll`` seconds);
        returns the sweep. With ``progress``, a bar of finished jobs on stderr. After ``timeout``
        seconds it returns the sweep as it then is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with bar_if(progress) as bar:
            while True:
                sweep = self.refresh()
                counts = sweep["counts"]
                active = sum(counts.get(status, 0) for status in UNFINISHED)
                if bar:
                    total = sum(counts.values())
                    bar.draw(total - active, total, " ".join(f"{k} {v}" for k, v in counts.items() if v))
                if not active or (deadline is not None and time.monotonic() >= deadline):
                    return sweep
                time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))

    def summary(self, sort: str = "created", as_frame: bool | None = None) -> Any:
        """Every summary item (job id, index, grid values, start, status, f, stop_reason,
        distance_to_minimum, steps_to_tolerance), all pages; ``sort`` created or f.

        A pandas DataFrame when pandas can be imported and ``as_frame`` is not False (True insists
        on one): a row per job, a column per grid key (its dotted name) in place of ``grid``, f and
        the distance as floats (NaN where there is none); otherwise a list of the API's items."""
        items: list[dict[str, Any]] = []
        for page in pages(self.client, f"/v1/sweeps/{self.id}", "summary", sort=sort, limit=1000):
            self._json = page
            items.extend(page["summary"])
        pandas = pandas_for(as_frame)
        if pandas is None:
            return items
        keys = list((self._json or {}).get("grid") or {})
        number = lambda v: float("nan") if v is None else float(v)  # noqa: E731 - "NaN", "Infinity" too
        rows = [{"id": i["id"], "index": i["index"], **{k: (i.get("grid") or {}).get(k) for k in keys},
                 "start": i["start"], "status": i["status"], "f": number(i["f"]), "stop_reason": i["stop_reason"],
                 "distance_to_minimum": number(i["distance_to_minimum"]),
                 "steps_to_tolerance": i["steps_to_tolerance"]} for i in items]
        columns = ["id", "index", *keys, "start", "status", "f", "stop_reason", "distance_to_minimum",
                   "steps_to_tolerance"]
        return pandas.DataFrame(rows, columns=columns)

    def grid(self, rows: str | None = None, cols: str | None = None, stat: str = "min") -> dict[str, Any]:
        """Final f of every job over two grid keys, as ``GET /v1/sweeps/ID/grid`` computes it:
        {rows, cols, cells, counts, finite, diverged, ...}; cells' non-finite values as floats."""
        grid = self.client.get_json(f"/v1/sweeps/{self.id}/grid", rows=rows, cols=cols, stat=stat)
        grid["cells"] = [[None if v is None else float(v) for v in row] for row in grid["cells"]]
        return grid  # type: ignore[no-any-return]

    def jobs(self) -> Iterator[JobHandle]:
        """Every job of the sweep, page after page."""
        for page in pages(self.client, f"/v1/sweeps/{self.id}/jobs", "jobs", limit=1000):
            for job in page["jobs"]:
                yield JobHandle(self.client, job["id"], job)

    def cancel(self) -> dict[str, Any]:
        """Cancel every queued or running job of the sweep; returns the sweep."""
        self._json = self.client.request_json("POST", f"/v1/sweeps/{self.id}/cancel")
        return self._json

    def delete(self) -> dict[str, Any]:
        """Delete the sweep and every job of it, as ``JobHandle.delete`` deletes one; returns what
        went. Sent once, never retried (a second delete is a 404)."""
        return self.client.request_json("DELETE", f"/v1/sweeps/{self.id}",  # type: ignore[no-any-return]
                                        timeout=max(self.client.timeout, DELETE_TIMEOUT))
