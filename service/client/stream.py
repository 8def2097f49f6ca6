"""A history download as one stream of whole lines: ``GET /v1/jobs/<id>/history?format=csv`` (or
ndjson), every row in one response when no ``limit`` is asked, resumed after a break.

The response is read in large pieces and handed on only up to its last complete line, so what
comes out is always whole rows (a CSV's header line first). Its end is trusted only when the HTTP
framing vouches for it (the terminating chunk of a chunked response, or the whole
Content-Length); a response without either is checked with one small request for a row after the
last one read. A download that breaks off (the connection lost or cut short, a read that timed
out, a response that ends inside a row) is asked for again from the step after the last complete
row (``start=``), as a GET is retried (``Transport.retry_seconds`` in all, counted afresh after
each try that brought rows), and a later response's header line, which must be the first one's,
is not passed on twice. When the time is up, or the transport retries nothing, it raises a
``DescentUnreachable`` saying how many rows had come: a history is never silently short."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import requests
import urllib3

from service.client.errors import DescentClientError, DescentUnreachable, reason
from service.client.http import Backoff, Transport

# The most rows one request with a ``limit`` may ask for (the API's bound); without a limit the
# API streams every row in one response.
MAX_ROWS = 100_000
# Bytes asked of the socket at a time.
READ_BYTES = 1 << 18
# Seconds one read of a streamed history may wait for bytes, at least.
READ_TIMEOUT = 300.0

_NDJSON_STEP = re.compile(rb'\{"step": ?(-?\d+)')
_BROKEN = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout,
           urllib3.exceptions.HTTPError)


class Broken(Exception):
    """One response of the download ended before its last row (internal: it is asked again)."""


def _last_step(text: bytes, fmt: str) -> int:
    """The step of the last line of ``text`` (whole lines, each ending in a newline)."""
    begin = text.rfind(b"\n", 0, len(text) - 1) + 1
    line = text[begin:begin + 64]
    if fmt == "csv":
        return int(line.split(b",", 1)[0])
    found = _NDJSON_STEP.match(line)
    if found is None:
        raise DescentClientError(f"a history line does not start with its step: {line[:40]!r}")
    return int(found.group(1))


class HistoryStream:
    """The whole lines of one history download (see the module's note); iterate once.

    ``rows`` counts the rows handed out so far, ``header`` is the CSV header line, and
    ``resumed`` how many times the download was taken up again after a break."""

    def __init__(self, client: Transport, job_id: str, fmt: str = "csv", fields: str | None = None,
                 every: int = 1, start: int = 0, limit: int | None = None) -> None:
        if fmt not in ("csv", "ndjson"):
            raise ValueError("fmt must be 'csv' or 'ndjson'")
        self.client, self.job_id, self.fmt, self.fields = client, job_id, fmt, fields
        self.every, self.start, self.limit = every, start, limit
        self.rows, self.resumed = 0, 0
        self._last: int | None = None
        self.header: bytes | None = None
        self.path = f"/v1/jobs/{job_id}/history"

    def _params(self, start: int, size: int | None) -> dict[str, object]:
        params: dict[str, object] = {"format": self.fmt, "start": start}
        if size is not None:
            params["limit"] = size
        if self.every != 1:
            params["every"] = self.every
        if self.fields:
            params["fields"] = self.fields
        return params

    def __iter__(self) -> Iterator[bytes]:
        cursor, remaining = self.start, self.limit
        backoff = Backoff(self.client.retry_seconds)
        while remaining is None or remaining > 0:
            size = None if remaining is None else min(remaining, MAX_ROWS)
            before, self._last = self.rows, None
            try:
                yield from self._response(cursor, size)
                why = None
            except Broken as exc:
                why = str(exc)
            got = self.rows - before
            if remaining is not None:
                remaining -= got
            if self._last is not None:
                cursor = self._last + 1
            if why is None:
                if size is None or got < size:
                    return  # every row there is (or all of the limit's)
                continue  # a full page of a larger limit: the next one from the step after it
            if got:
                backoff = Backoff(self.client.retry_seconds)  # rows came: a fresh allowance
            if self.client.retry_seconds <= 0 or backoff.left <= 0:
                raise DescentUnreachable(
                    f"the history download from {self.client.url} broke off after {self.rows:,} rows ({why}); "
                    "the rows after them could not be read")
            self.resumed += 1
            time.sleep(backoff.next_pause())

    def _response(self, start: int, size: int | None) -> Iterator[bytes]:
        """The whole lines of one response, less its header when one was handed out before;
        ``Broken`` when it stops short. Counts them in ``rows`` and keeps the last step."""
        resp = self.client.request("GET", self.path, params=self._params(start, size), stream=True,
                                   timeout=(self.client.timeout, max(self.client.timeout, READ_TIMEOUT)))
        framed = resp.headers.get("Transfer-Encoding", "").lower() == "chunked" or "Content-Length" in resp.headers
        tail = b""
        header_due = self.fmt == "csv"
        before = self.rows
        try:
            try:
                for piece in resp.iter_content(chunk_size=READ_BYTES):
                    if tail:
                        piece = tail + piece
                    cut = piece.rfind(b"\n") + 1
                    if cut == 0:
                        tail = piece
                        continue
                    text, tail = piece[:cut], piece[cut:]
                    lines = text.count(b"\n")
                    if header_due:
                        text = self._take_header(text)
                        header_due = False
                        lines -= 1
                        if not text:
                            continue
                    if lines:
                        self._last = _last_step(text, self.fmt)
                        self.rows += lines
                    yield text
            except _BROKEN as exc:
                raise Broken(reason(exc)) from None
        finally:
            resp.close()
        if tail:
            raise Broken("the response ended inside a row")
        if header_due:
            raise Broken("the response ended before its header line")
        short = size is None or self.rows - before < size
        if not framed and short and self._more_after(start if self._last is None else self._last + 1):
            raise Broken("the response ended early: no HTTP framing vouched for its end, and rows follow")

    def _take_header(self, text: bytes) -> bytes:
        """``text`` past its first line, the CSV header: kept the first time and handed out, only
        checked against that one afterwards."""
        cut = text.find(b"\n") + 1
        header = text[:cut]
        if self.header is None:
            self.header = header
            return text
        if header != self.header:
            raise DescentClientError(f"the history download from {self.client.url} was taken up again after a "
                                     "break, and the columns changed; read it again")
        return text[cut:]

    def _more_after(self, start: int) -> bool:
        page = self.client.get_json(self.path, start=start, limit=1, fields="step",
                                    every=self.every if self.every != 1 else None)
        return bool(page.get("rows"))
