"""The client's transport: one requests session to one API, with the retries that are safe.

Requests are retried only where that is safe: GETs, and POSTs that carry an ``Idempotency-Key``.
They are retried on connection errors and on a 503 with ``Retry-After`` (the database briefly
down, the API at its bound on streams), a few times with backoff; a cancel or a keyless POST is
sent once."""
from __future__ import annotations

import json
import time
from typing import Any

import requests

from service.client.errors import DescentClientError, DescentUnreachable, reason


def retry_after(resp: requests.Response) -> float | None:
    """The pause a ``Retry-After`` header asks for, in seconds (at most 60); None without one."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return 2.0


class Transport:
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
        return f"{type(self).__name__}({self.url!r})"

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
                    raise DescentUnreachable(f"cannot reach the Descent API at {self.url} ({reason(exc)}); "
                                             "is it running, and is DESCENT_URL right?") from None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            except requests.RequestException as exc:  # a URL requests cannot use, ...
                raise DescentUnreachable(f"cannot send a request to the Descent API at {self.url}: {exc}") from None
            pause = retry_after(resp) if resp.status_code == 503 else None
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
