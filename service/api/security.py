"""Browser-safe HTTP: which requests the API refuses before a handler runs, and the headers every
response carries. In order, each refusal the usual JSON error:

1. ``Host`` (or an absolute-form target's host, RFC 7230 §5.4) must be an allowed host
   (``DESCENT_ALLOWED_HOSTS``; the loopback names on a loopback bind): 400. This stops DNS rebinding.
2. ``Origin``, when sent, must be the API's own or one of ``DESCENT_ALLOWED_ORIGINS`` (``null``
   never): 403. Requests without one (curl, the ``descent`` command) pass.
3. A ``Content-Length`` over the limit: 413, before the body is read.
4. A body must be ``application/json`` (``multipart/form-data`` only for uploads to
   ``POST /v1/jobs`` and ``/v1/sweeps``): 415. A page on another origin that posts a form is refused by 2, as browsers send
   its ``Origin``; with tokens required it has none to send either.

CORS is off unless ``DESCENT_ALLOWED_ORIGINS`` lists origins. Every response carries ``nosniff``,
a strict Content-Security-Policy, ``Referrer-Policy: no-referrer`` and
``Cross-Origin-Resource-Policy: same-origin``.
"""
from __future__ import annotations

import io
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request

from service.config import ConfigError, Settings
from service.errors import DescentError, ErrorCode

__all__ = ["is_loopback", "register", "LOOPBACK_HOSTS", "CONTENT_SECURITY_POLICY"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

# img-src allows blob: for the dashboard's plot images, which it fetches with its token and shows as blobs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; img-src 'self' blob:; object-src 'none'; "
                           "frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}

CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key"
CORS_EXPOSE = "Location, Retry-After, Idempotent-Replayed"
CORS_MAX_AGE = "600"

_DEFAULT_PORTS = {"http": 80, "https": 443}
# A Host header (or an allow-list entry): a DNS name or IPv4 address, or a bracketed IPv6 address,
# with an optional port. As Django's ``host_validation_re``.
_HOST_RE = re.compile(r"^(?P<name>[a-z0-9_.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::(?P<port>[0-9]{1,5}))?$")


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or host name, no port; IPv6 with or without brackets)
    is a loopback address: ``localhost``, 127.0.0.0/8, ``::1`` (or ``::ffff:127.x.x.x``).
    An empty host or ``0.0.0.0``/``::`` (every interface) is not."""
    name = _strip_brackets(host.strip().lower()).rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header value, lower-cased, trailing dot dropped, IPv6 in
    brackets; None if it is not a well-formed host."""
    value = value.strip().lower()
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"  # a bare IPv6 address (only in allow-list entries)
    match = _HOST_RE.match(value)
    if not match:
        return None
    name = match["name"]
    if not name.startswith("["):
        name = name.rstrip(".")
    port = int(match["port"]) if match["port"] else None
    if not name or (port is not None and not 0 < port < 65536):
        return None
    return name, port


@dataclass(frozen=True)
class HostPolicy:
    """The allowed ``Host`` values: ``(name, port or None for any port)``; ``any_host`` for ``*``."""

    entries: frozenset[tuple[str, int | None]]
    any_host: bool = False

    def allows(self, host: str) -> bool:
        parsed = _split_host(host)
        if parsed is None:
            return False
        if self.any_host:
            return True
        name, port = parsed
        return (name, None) in self.entries or (name, port) in self.entries


def host_policy(settings: Settings) -> HostPolicy:
    """The Host allow-list for ``settings``; ConfigError for a non-loopback bind without one."""
    raw = (settings.allowed_hosts or "").strip()
    if not raw:
        if not is_loopback(settings.host):
            raise ConfigError(
                f"DESCENT_ALLOWED_HOSTS must be set when the API binds {settings.host or 'every address'!r} "
                "(not loopback): the comma-separated host names clients use, e.g. api.example.com,localhost "
                "('*' allows any Host and disables the DNS-rebinding guard)")
        return HostPolicy(frozenset((name, None) for name in LOOPBACK_HOSTS))
    entries: set[tuple[str, int | None]] = set()
    any_host = False
    for item in _items(raw):
        if item == "*":
            any_host = True
            continue
        parsed = _split_host(item)
        if parsed is None:
            raise ConfigError(f"DESCENT_ALLOWED_HOSTS must be comma-separated host names with optional "
                              f"ports (or '*'), got {item[:60]!r}")
        entries.add(parsed)
    return HostPolicy(frozenset(entries), any_host)


def _items(raw: str) -> list[str]:
    """The non-empty entries of a comma-separated setting."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def _origin(scheme: str, host: str) -> str | None:
    """``scheme://host[:port]`` normalised (lower case, default port dropped); None if malformed."""
    scheme = scheme.lower()
    parsed = _split_host(host)
    if scheme not in _DEFAULT_PORTS or parsed is None:
        return None
    name, port = parsed
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{name}"
    return f"{scheme}://{name}:{port}"


def _parse_origin(value: str) -> str | None:
    """An ``Origin`` header (or allow-list entry) normalised; None for ``null`` or a malformed one."""
    value = value.strip()
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value.rstrip("/"))
    except ValueError:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    return _origin(parts.scheme, parts.netloc)


def origin_policy(settings: Settings) -> frozenset[str]:
    """The configured cross-origin allow-list (normalised); ConfigError naming a bad entry."""
    origins = set()
    for item in _items(settings.allowed_origins or ""):
        origin = _parse_origin(item)
        if origin is None:
            raise ConfigError(f"DESCENT_ALLOWED_ORIGINS must be comma-separated origins like "
                              f"https://dashboard.example.com (scheme://host[:port], no '*'), got {item[:60]!r}")
        origins.add(origin)
    return frozenset(origins)


def _max_body_bytes(settings: Settings) -> int:
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return int(limit) if limit is not None else settings.limits.max_body_bytes


def _has_body() -> bool:
    if request.content_length:
        return True
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _buffer_chunked_body(limit: int) -> None:
    """A chunked body (no ``Content-Length``) from a server that terminates the stream: read at
    most ``limit`` + 1 bytes of it, 413 if there are more, else hand the handler the bytes with
    their length. (Werkzeug alone would stop at the limit and give the handler a truncated body.)
    Waitress never gets here: it de-chunks bodies itself and sets ``Content-Length``."""
    environ = request.environ
    if not environ.get("wsgi.input_terminated") or "stream" in request.__dict__:
        return  # Werkzeug reads no body from an unterminated stream; or a body already taken
    stream, chunks, size = environ["wsgi.input"], [], 0
    while size <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise DescentError(f"the request body is over the limit of {limit:,} bytes (max_body_bytes)",
                           code=ErrorCode.BODY_TOO_LARGE)
    environ["wsgi.input"] = io.BytesIO(b"".join(chunks))
    environ["CONTENT_LENGTH"] = str(size)


def _absolute_form_host(target: str) -> str | None:
    """The host of an absolute-form request target (``GET http://host/path HTTP/1.1``, RFC 7230
    §5.3.2), which takes precedence over the Host header (§5.4); None for the usual origin-form.
    A malformed one is a host no allow-list holds."""
    if target.startswith("/") or "://" not in target:
        return None
    try:
        parts = urlsplit(target)
    except ValueError:
        return target.split("/", 3)[2] if target.count("/") >= 2 else target
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        return target
    return parts.netloc.rsplit("@", 1)[-1]


def register(app: Flask, settings: Settings) -> None:
    """Install the request checks and response headers on ``app``. Raises ConfigError for a
    non-loopback bind without ``DESCENT_ALLOWED_HOSTS`` or a malformed allow-list."""
    hosts = host_policy(settings)
    allowed_origins = origin_policy(settings)

    def cross_origin() -> str | None:
        """The request's Origin, as sent, when it is one of the configured origins."""
        origin = request.headers.get("Origin")
        return origin.strip() if origin and _parse_origin(origin) in allowed_origins else None

    @app.before_request
    def _check_request():  # type: ignore[no-untyped-def]
        host = request.host
        if not hosts.allows(host):
            sent = request.headers.get("Host", "")
            raise DescentError(f"the Host header {sent[:100]!r} is not one this service answers; "
                               "add it to DESCENT_ALLOWED_HOSTS", code=ErrorCode.INVALID_HEADER, field="Host")
        target_host = _absolute_form_host(request.environ.get("REQUEST_URI", ""))
        if target_host is not None and not hosts.allows(target_host):
            raise DescentError(f"the request target's host {target_host[:100]!r} is not one this service answers "
                               "(an absolute-form target's host takes precedence over Host); "
                               "add it to DESCENT_ALLOWED_HOSTS", code=ErrorCode.INVALID_HEADER, field="Host")

        origin = request.headers.get("Origin")
        if origin is not None:
            normalised = _parse_origin(origin)
            own = _origin(request.scheme, host)
            if normalised is None or (normalised != own and normalised not in allowed_origins):
                raise DescentError(f"requests from the origin {origin[:100]!r} are not allowed; "
                                   "add it to DESCENT_ALLOWED_ORIGINS", code=ErrorCode.FORBIDDEN, field="Origin")
            if (request.method == "OPTIONS" and normalised in allowed_origins
                    and "Access-Control-Request-Method" in request.headers):
                return Response(status=204)  # a CORS preflight; after_request adds the headers

        if request.routing_exception is not None:
            return None  # 404 / 405 first; nothing will read the body

        limit = _max_body_bytes(settings)
        if request.content_length is not None and request.content_length > limit:
            raise DescentError(f"the request body is over the limit of {limit:,} bytes (max_body_bytes)",
                               code=ErrorCode.BODY_TOO_LARGE)
        if _has_body() and request.mimetype != "application/json" and not _upload_allowed():
            got = request.headers.get("Content-Type")
            raise DescentError("a request body must be sent with Content-Type: application/json (or, to POST "
                               "/v1/jobs or /v1/sweeps with .npy files, multipart/form-data)"
                               + (f" (got {got[:100]!r})" if got else " (none was sent)"),
                               code=ErrorCode.UNSUPPORTED_MEDIA_TYPE, field="Content-Type")
        if request.content_length is None and _has_body():
            _buffer_chunked_body(limit)
        return None

    def _upload_allowed() -> bool:
        """A job or a sweep submitted with .npy parts (``service.api.body``)."""
        return request.mimetype == "multipart/form-data" and request.endpoint in ("jobs.submit", "sweeps.submit")

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if allowed_origins:
            response.vary.add("Origin")
            origin = cross_origin()
            if origin is not None:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
                if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                    response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                    response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                    response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response
