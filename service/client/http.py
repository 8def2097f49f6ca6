"""The client's transport: one requests session to one API, with the retries that are safe.

Requests are retried only where that is safe: GETs, and POSTs that carry an ``Idempotency-Key``
(a keyed POST sent twice makes one job). A cancel, a delete or any other keyless request is sent
once. A safe request is tried again, for ``retry_seconds`` in all (30 by default, or
DESCENT_RETRY_SECONDS) so that it rides out an API restart, on:

- no answer at all: connection refused or cut short, a timeout;
- 502, 503 or 504 (a proxy whose API is restarting, the database briefly down, the API at its bound
  on streams), pausing as the answer's ``Retry-After`` asks when it has one;
- 429 with ``Retry-After`` (a per-owner quota), when that pause fits in what is left of the time.

Pauses grow exponentially from ``FIRST_PAUSE`` to at most ``MAX_PAUSE`` seconds each, with jitter
(each a random share, from half to all, of its step), so clients cut off together do not come back
together. A failure of a keyed request carries its key (``DescentClientError.idempotency_key``)."""
from __future__ import annotations

import json
import math
import os
import random
import time
from typing import Any

import requests

from service.client.errors import DescentClientError, DescentUnreachable, reason

# Seconds a safe request keeps being retried, in all, unless ``retry_seconds`` or
# DESCENT_RETRY_SECONDS says otherwise: long enough for an API restart (seen to take 4-17 s).
DEFAULT_RETRY_SECONDS = 30.0
RETRY_ENV = "DESCENT_RETRY_SECONDS"
# The first pause between tries, and the most any one pause may be (before jitter).
FIRST_PAUSE = 0.25
MAX_PAUSE = 4.0
# Answers a safe request is tried again after (with or without Retry-After).
RETRIED_STATUSES = (502, 503, 504)


def retry_after(resp: requests.Response) -> float | None:
    """The pause a ``Retry-After`` header asks for, in seconds (at most 60); None without one."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return 2.0


def retry_seconds_from_env() -> float:
    """DESCENT_RETRY_SECONDS (seconds, 0 or more), or ``DEFAULT_RETRY_SECONDS`` when unset or empty."""
    raw = os.environ.get(RETRY_ENV, "")
    if raw.strip() == "":
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise DescentClientError(f"{RETRY_ENV} must be a number of seconds from 0 up, got {raw[:40]!r}")
    return value


class Backoff:
    """The pauses between the tries of one request: exponential with jitter, each at most
    ``MAX_PAUSE``, until ``budget`` seconds have gone since the first try."""

    def __init__(self, budget: float) -> None:
        self.began = time.monotonic()
        self.deadline = self.began + budget
        self.step = FIRST_PAUSE

    @property
    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def next_pause(self) -> float:
        """The pause before the next try (never past the deadline, so the last try is made at it)."""
        pause = self.step * random.uniform(0.5, 1.0)
        self.step = min(self.step * 2, MAX_PAUSE)
        return min(pause, self.left)


class Transport:
    """A connection to one Descent API.

    ``url`` and ``token`` default to DESCENT_URL (itself defaulting to http://127.0.0.1:DESCENT_PORT)
    and DESCENT_TOKEN. ``timeout`` bounds each ordinary request. A safe request (a GET, a keyed
    POST) is retried for ``retry_seconds`` in all (default DESCENT_RETRY_SECONDS, else 30; 0: tried
    once), at most ``retries`` times again when that is given."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 retries: int | None = None, retry_seconds: float | None = None) -> None:
        if url is None or token is None:
            from service.config import load_settings

            settings = load_settings()
            url = settings.api_url if url is None else url
            token = settings.token if token is None else token
        if retry_seconds is None:
            retry_seconds = retry_seconds_from_env()
        elif not 0 <= retry_seconds < math.inf:
            raise ValueError(f"retry_seconds must be from 0 up, got {retry_seconds!r}")
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.retry_seconds = timeout, retries, float(retry_seconds)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "descent-client"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None,
                stream: bool = False, files: dict[str, tuple[str, bytes, str]] | None = None) -> requests.Response:
        """One API request, retried when safe; the answer when it is a success (2xx), else a
        DescentClientError. ``body`` is JSON-encoded unless it is already ``str`` or ``bytes``;
        with ``files`` ({part: (file name, bytes, content type)}) the request is multipart, the
        body its ``spec`` part."""
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
            if files is None:
                headers.setdefault("Content-Type", "application/json")
        if files is not None:
            files = {"spec": ("spec.json", data or b"{}", "application/json"), **files}
            data = None
        key = headers.get("Idempotency-Key")
        safe = method == "GET" or key is not None
        backoff = Backoff(self.retry_seconds if safe else 0.0)
        tries = 0
        while True:
            tries += 1
            last = not safe or backoff.left <= 0 or (self.retries is not None and tries > self.retries)
            try:
                resp = self.session.request(method, self.url + path, params=params, data=data, headers=headers,
                                            timeout=timeout or self.timeout, stream=stream, files=files)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                if last or backoff.left <= 0:
                    raise self._unreachable(exc, key, tries, time.monotonic() - backoff.began) from None
                time.sleep(backoff.next_pause())
                continue
            except requests.RequestException as exc:  # a URL requests cannot use, ...
                raise DescentUnreachable(f"cannot send a request to the Descent API at {self.url}: {exc}",
                                         idempotency_key=key) from None
            if resp.ok:
                return resp
            pause = self._pause_for(resp, backoff)
            if pause is not None and not last:
                resp.close()
                time.sleep(pause)
                continue
            error = DescentClientError.from_response(resp, idempotency_key=key)
            resp.close()
            raise error

    def _pause_for(self, resp: requests.Response, backoff: Backoff) -> float | None:
        """How long to pause before trying a safe request again after this error answer; None: not
        again (an answer that is not passing, or a Retry-After longer than the time left)."""
        asked = retry_after(resp)
        if resp.status_code in RETRIED_STATUSES or (resp.status_code == 429 and asked is not None):
            if not asked:  # none, or 0: back off as for no answer
                return backoff.next_pause()
            return asked if asked <= backoff.left else None
        return None

    def _unreachable(self, exc: Exception, key: str | None, tries: int, seconds: float) -> DescentUnreachable:
        tried = f"; tried {tries} times over {seconds:.{0 if seconds >= 10 else 1}f} s" if tries > 1 else ""
        return DescentUnreachable(f"cannot reach the Descent API at {self.url} ({reason(exc)}{tried}); is it "
                                  "running, and is DESCENT_URL right?", idempotency_key=key)

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
