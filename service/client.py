"""A Python client of the Descent API: submit jobs and sweeps, wait for them, read their histories.

    from service.client import Client

    client = Client()                       # DESCENT_URL and DESCENT_TOKEN, as the descent command
    job = client.submit({"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500,
                         "optimizer": {"name": "sgd", "lr": 0.001}})
    final = job.wait(progress=True)         # a one-line progress bar on stderr; the finished job
    rows = job.history(fields=["x", "f"])   # every row (a pandas DataFrame when pandas is installed)
    job.plot(path="contour.png")

Every failure is a ``DescentClientError``: the API's own message for an error answer (``.status``
is the HTTP status, ``.code`` and ``.field`` the API's error code and field), or, for an API that
cannot be reached, a ``DescentUnreachable`` whose one-line message names the URL.

Requests are retried only where that is safe: GETs, and POSTs that carry an ``Idempotency-Key``
(``submit`` and ``submit_sweep`` always send one, generated here, so a submit retried after a lost
connection makes one job, not two). They are retried on connection errors and on a 503 with
``Retry-After`` (the database briefly down, the API at its bound on streams), a few times with
backoff; a cancel or a keyless POST is sent once.
"""
from __future__ import annotations

import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, TextIO

import requests

FINISHED = ("succeeded", "failed", "cancelled")
# Seconds one ``?wait=`` long-poll may ask for (the API's bound).
MAX_WAIT = 30.0
# Rows asked for per page of history: JSON pages, and the CSV/NDJSON pieces of an export.
JSON_PAGE_ROWS = 10_000
TEXT_PAGE_ROWS = 100_000
JOBS_PAGE = 1000
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class DescentClientError(Exception):
    """An error answer of the API, or a request that could not be made.

    ``str(err)`` is one line: the API's message. ``status`` is the HTTP status (None when no answer
    came), ``code`` and ``field`` the API's error code and the request field it names, ``body``
    the parsed error answer (None when it was not JSON)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 field: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.field, self.body = message, status, code, field, body

    @classmethod
    def from_response(cls, resp: requests.Response) -> "DescentClientError":
        try:
            body = resp.json()
            error = body["error"]
            return cls(str(error.get("message") or error.get("code")), resp.status_code, error.get("code"),
                       error.get("field"), body)
        except (ValueError, KeyError, TypeError, AttributeError):
            text = " ".join(resp.text.split())[:200] or resp.reason or "no message"
            return cls(f"HTTP {resp.status_code}: {text}", resp.status_code)


class DescentUnreachable(DescentClientError):
    """No answer from the API at all (connection refused, DNS, timeout, a connection cut short)."""


def _reason(exc: Exception) -> str:
    """The short cause inside a requests exception ('Connection refused', 'timed out')."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = re.findall(r"\[Errno -?\d+\] ([^'\"()\]]+)", str(exc))
    if found:
        return found[-1].strip().rstrip(".")
    return type(exc).__name__


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return 2.0


def _finite(value: Any) -> Any:
    """The API's JSON spellings of NaN and the infinities ("NaN", "Infinity") as floats again."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


class Client:
    """A connection to one Descent API.

    ``url`` and ``token`` default to DESCENT_URL (itself defaulting to http://127.0.0.1:DESCENT_PORT)
    and DESCENT_TOKEN. ``timeout`` bounds each ordinary request; ``retries`` is how many times a
    safe request is tried again (connection errors, 503 with Retry-After) before it fails."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3) -> None:
        if url is None or token is None:
            from service.config import load_settings

            settings = load_settings()
            url = settings.api_url if url is None else url
            token = settings.token if token is None else token
        self.url = url.rstrip("/")
        self.timeout, self.retries = timeout, retries
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "descent-client"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- requests ---------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None,
                stream: bool = False) -> requests.Response:
        """One API request, retried when safe; the answer when it is a success (2xx), else a
        DescentClientError. ``body`` is JSON-encoded unless it is already ``str`` or ``bytes``."""
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
            headers.setdefault("Content-Type", "application/json")
        safe = method == "GET" or "Idempotency-Key" in headers
        delay = 0.5
        for attempt in range(self.retries + 1):
            last = attempt == self.retries or not safe
            try:
                resp = self.session.request(method, self.url + path, params=params, data=data, headers=headers,
                                            timeout=timeout or self.timeout, stream=stream)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                if last:
                    raise DescentUnreachable(f"cannot reach the Descent API at {self.url} ({_reason(exc)}); "
                                             "is it running, and is DESCENT_URL right?") from None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            except requests.RequestException as exc:  # a URL requests cannot use, ...
                raise DescentUnreachable(f"cannot send a request to the Descent API at {self.url}: {exc}") from None
            pause = _retry_after(resp) if resp.status_code == 503 else None
            if pause is not None and not last:
                resp.close()
                time.sleep(pause)
                continue
            if resp.ok:
                return resp
            error = DescentClientError.from_response(resp)
            resp.close()
            raise error
        raise AssertionError("not reached")  # pragma: no cover

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request()``'s answer as JSON (a DescentClientError when it is not JSON)."""
        resp = self.request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError:
            raise DescentClientError(f"the API at {self.url} answered {method} {path} with something that is "
                                     f"not JSON ({resp.headers.get('Content-Type', 'no Content-Type')})",
                                     resp.status_code) from None

    def get_json(self, path: str, **params: Any) -> Any:
        """GET ``path`` with ``params`` (None values left out): the answer's JSON."""
        return self.request_json("GET", path, params={k: v for k, v in params.items() if v is not None})

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any] | str | bytes, idempotency_key: str | None = None) -> "JobHandle":
        """Submit a job spec (a dict, or JSON text sent as it is); the new job's handle.

        An Idempotency-Key (a random one unless given) goes with it, so the retries after a lost
        connection, or a resubmit with the same key, answer with the same job."""
        key = idempotency_key or uuid.uuid4().hex
        job = self.request_json("POST", "/v1/jobs", body=spec, headers={"Idempotency-Key": key})
        return JobHandle(self, job["id"], job)

    def job(self, job_id: str) -> "JobHandle":
        """The handle of an existing job, read once (a DescentClientError with status 404 if there
        is none, or it is another owner's)."""
        handle = JobHandle(self, job_id)
        handle.refresh()
        return handle

    def jobs(self, limit: int | None = None, **filters: Any) -> Iterator["JobHandle"]:
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
    def submit_sweep(self, spec: dict[str, Any] | str | bytes, idempotency_key: str | None = None) -> "SweepHandle":
        """Submit a sweep ({base, grid, starts, ...}); its handle. Sent with an Idempotency-Key."""
        key = idempotency_key or uuid.uuid4().hex
        sweep = self.request_json("POST", "/v1/sweeps", body=spec, headers={"Idempotency-Key": key},
                                  timeout=max(self.timeout, 600.0))
        return SweepHandle(self, sweep["id"], sweep)

    def sweep(self, sweep_id: str) -> "SweepHandle":
        """The handle of an existing sweep, read once."""
        handle = SweepHandle(self, sweep_id)
        handle.refresh()
        return handle

    # -- the catalog ------------------------------------------------------------------------
    def objectives(self) -> list[dict[str, Any]]:
        """The named objectives: name, formula, params, default_start, minima, ..."""
        return list(self.get_json("/v1/objectives")["objectives"])

    def optimizers(self) -> list[dict[str, Any]]:
        """The allowed optimisers: name, torch class, arguments with their defaults."""
        return list(self.get_json("/v1/optimizers")["optimizers"])


class ProgressBar:
    """A one-line text progress bar, redrawn in place on ``stream`` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream, self.width, self.shown = stream or sys.stderr, width, ""

    def draw(self, done: int | None, total: int | None, note: str) -> None:
        if total:
            share = min(1.0, max(0.0, (done or 0) / total))
            filled = int(share * self.width)
            line = f"[{'#' * filled}{'-' * (self.width - filled)}] {share:4.0%} {done}/{total} {note}"
        else:
            line = f"[{'-' * self.width}] {note}"
        if line != self.shown:
            self._write("\r" + line.ljust(len(self.shown)))
            self.shown = line

    def close(self) -> None:
        if self.shown:
            self._write("\n")
            self.shown = ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: no bar, no failure
            pass


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def job_progress(job: dict[str, Any]) -> tuple[int | None, int | None, str]:
    """(steps done, steps in all, a short note) of a job, from its ``progress`` field."""
    status = job.get("status", "?")
    progress = job.get("progress") or {}
    steps = progress.get("steps") or (job.get("spec") or {}).get("steps")
    done = progress.get("step")
    if status == "succeeded" and job.get("result"):
        done = job["result"].get("steps", done)
        steps = steps if done is None or steps is None or done <= steps else done
    note = status
    if "f" in progress:
        note += f"  f={_number(progress['f'])}"
    return done, steps, note


class JobHandle:
    """One job of the API. ``json`` is the job as last read (``refresh()`` reads it again)."""

    def __init__(self, client: Client, job_id: str, job: dict[str, Any] | None = None) -> None:
        self.client, self.id, self._json = client, job_id, job

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r}, status={(self._json or {}).get('status')!r})"

    @property
    def json(self) -> dict[str, Any]:
        """The job as last read (read now if it never was)."""
        return self._json if self._json is not None else self.refresh()

    def refresh(self) -> dict[str, Any]:
        """Read the job again; returns it (and keeps it as ``json``)."""
        self._json = self.client.get_json(f"/v1/jobs/{self.id}")
        return self._json

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
        bar = ProgressBar() if progress else None
        try:
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
                pause = _retry_after(resp)
                if pause:  # the API answered at once: it serves its most waiters
                    time.sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))
        finally:
            if bar:
                bar.close()

    def cancel(self) -> dict[str, Any]:
        """Ask the job to stop (a queued one is cancelled at once, a running one within about a
        second); returns the job. A finished job answers 409 (a DescentClientError)."""
        self._json = self.client.request_json("POST", f"/v1/jobs/{self.id}/cancel")
        return self._json

    def history_pages(self, fields: list[str] | str | None = None, every: int = 1, start: int = 0,
                      limit: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """The history's JSON pages, in step order, as the API writes them (NaN as "NaN")."""
        names = ",".join(fields) if isinstance(fields, (list, tuple)) else fields
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
        names = ",".join(fields) if isinstance(fields, (list, tuple)) else fields
        given, first_page = 0, True
        while limit is None or given < limit:
            size = TEXT_PAGE_ROWS if limit is None else min(TEXT_PAGE_ROWS, limit - given)
            params = {"format": fmt, "start": start, "limit": size, **({"every": every} if every != 1 else {}),
                      **({"fields": names} if names else {})}
            resp = self.client.request("GET", f"/v1/jobs/{self.id}/history", params=params, stream=True,
                                       timeout=max(self.client.timeout, 300.0))
            lines = _Lines(skip_header=fmt == "csv" and not first_page)
            try:
                for piece in resp.iter_content(chunk_size=1 << 16):
                    out = lines.feed(piece)
                    if out:
                        yield out
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                raise DescentUnreachable(f"the history download from {self.client.url} broke off "
                                         f"({_reason(exc)})") from None
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


class _Lines:
    """Counts the lines of a text stream and finds the step that begins its last one (a CSV
    line's first field, an NDJSON line's "step"), keeping only the start of each line."""

    _STEP = re.compile(rb'^(?:\{"step": ?)?(-?\d+)')
    HEAD = 64

    def __init__(self, skip_header: bool) -> None:
        self.skip, self.count, self.head, self.last_step = skip_header, 0, b"", None

    @property
    def partial(self) -> bool:
        return bool(self.head)

    def feed(self, piece: bytes) -> bytes:
        """Take ``piece`` in; what of it to pass on (all, less a header line to skip)."""
        out = piece
        end = piece.rfind(b"\n")
        if end < 0:
            if len(self.head) < self.HEAD:
                self.head += piece[:self.HEAD - len(self.head)]
        else:
            self.count += piece.count(b"\n")
            begin = piece.rfind(b"\n", 0, end) + 1
            last = (self.head + piece[:end]) if begin == 0 else piece[begin:end]
            found = self._STEP.match(last[:self.HEAD])
            if found:
                self.last_step = int(found.group(1))
            self.head = piece[end + 1:end + 1 + self.HEAD]
        if self.skip:
            newline = piece.find(b"\n")
            if newline < 0:
                return b""
            self.skip, out = False, piece[newline + 1:]
        return out


class SweepHandle:
    """One sweep of the API. ``json`` is the sweep as last read: counts by status and a first
    page of its summary."""

    def __init__(self, client: Client, sweep_id: str, sweep: dict[str, Any] | None = None) -> None:
        self.client, self.id, self._json = client, sweep_id, sweep

    def __repr__(self) -> str:
        return f"SweepHandle({self.id!r}, jobs={(self._json or {}).get('jobs')!r})"

    @property
    def json(self) -> dict[str, Any]:
        return self._json if self._json is not None else self.refresh()

    def refresh(self) -> dict[str, Any]:
        self._json = self.client.get_json(f"/v1/sweeps/{self.id}")
        return self._json

    @property
    def counts(self) -> dict[str, int]:
        """Its jobs by status, read now."""
        return dict(self.refresh()["counts"])

    def wait(self, timeout: float | None = None, progress: bool = False, poll: float = 1.0) -> dict[str, Any]:
        """Wait until no job of the sweep is queued or running (read every ``poll`` seconds);
        returns the sweep. With ``progress``, a bar of finished jobs on stderr. After ``timeout``
        seconds it returns the sweep as it then is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = ProgressBar() if progress else None
        try:
            while True:
                sweep = self.refresh()
                counts = sweep["counts"]
                active = counts.get("queued", 0) + counts.get("running", 0)
                if bar:
                    total = sum(counts.values())
                    bar.draw(total - active, total, " ".join(f"{k} {v}" for k, v in counts.items() if v))
                if not active or (deadline is not None and time.monotonic() >= deadline):
                    return sweep
                time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
        finally:
            if bar:
                bar.close()

    def summary(self, sort: str = "created") -> list[dict[str, Any]]:
        """Every summary item (job id, grid values, start, status, f, stop_reason,
        distance_to_minimum, steps_to_tolerance), all pages; ``sort`` created or f."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.client.get_json(f"/v1/sweeps/{self.id}", sort=sort, limit=1000, cursor=cursor)
            self._json = page
            items.extend(page["summary"])
            cursor = page.get("next_cursor")
            if not cursor or not page["summary"]:
                return items

    def jobs(self) -> Iterator[JobHandle]:
        """Every job of the sweep, page after page."""
        cursor = None
        while True:
            page = self.client.get_json(f"/v1/sweeps/{self.id}/jobs", limit=1000, cursor=cursor)
            for job in page["jobs"]:
                yield JobHandle(self.client, job["id"], job)
            cursor = page.get("next_cursor")
            if not cursor or not page["jobs"]:
                return

    def cancel(self) -> dict[str, Any]:
        """Cancel every queued or running job of the sweep; returns the sweep."""
        self._json = self.client.request_json("POST", f"/v1/sweeps/{self.id}/cancel")
        return self._json
