"""Who is asking: bearer tokens, the owner and admin flag of every request.

With ``DESCENT_AUTH=required`` every request but the open ones (health, OpenAPI and the dashboard's
pages and static files, which carry no data: the page asks for a token and sends it itself) needs ``Authorization: Bearer <token>``; a
missing or bad one is a 401 with ``WWW-Authenticate: Bearer``. With ``off`` (the default on a
loopback bind) every request acts as the one local admin, owner ``local``. ``off`` on any other
address is refused at start unless ``DESCENT_AUTH_OFF_ON_NETWORK=yes``.

A token's check is one indexed lookup of its SHA-256, remembered for a few seconds so a busy
client costs no query per request; a revoked token stops working within that time.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from flask import Flask, g, request

from service.api.security import is_loopback
from service.config import ConfigError, Settings
from service.errors import DescentError, ErrorCode
from service.store import Database
from service.store.jobs import LOCAL_OWNER
from service.store.tokens import TOKEN_SHAPE, digest, verify_token

CACHE_SECONDS = 5.0
# Endpoints anyone may call: they carry no job data.
OPEN_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "openapi.openapi", "static"})


@dataclass(frozen=True)
class Caller:
    """The owner a request acts for, and whether it may see and do everything."""

    owner: str
    admin: bool

    @property
    def owner_filter(self) -> str | None:
        """The owner the store should restrict to: None (everyone's) for an admin."""
        return None if self.admin else self.owner


LOCAL_ADMIN = Caller(LOCAL_OWNER, admin=True)


def auth_mode(settings: Settings) -> str:
    """``required`` or ``off`` for an API bound to ``settings.host``; ConfigError if unsafe or unknown."""
    mode = settings.auth or ("off" if is_loopback(settings.host) else "required")
    if mode not in ("required", "off"):
        raise ConfigError(f"DESCENT_AUTH must be required or off, got {mode[:40]!r}")
    if mode == "off" and not is_loopback(settings.host) and settings.auth_off_on_network != "yes":
        raise ConfigError(f"DESCENT_AUTH=off on {settings.host}, a non-loopback address, would let anyone who "
                          "reaches it act as admin; set DESCENT_AUTH_OFF_ON_NETWORK=yes to mean it")
    return mode


class TokenCache:
    """Verified tokens for ``CACHE_SECONDS``, keyed by their SHA-256 (never the token itself),
    the least recently used forgotten first. Refusals are not remembered: text that is not even
    shaped like a token is refused before any lookup, so no client can fill this up."""

    def __init__(self, db: Database, max_entries: int = 10_000) -> None:
        self.db, self.max_entries = db, max_entries
        self._seen: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        self._lock = threading.Lock()

    def caller(self, secret: str) -> Caller | None:
        if not TOKEN_SHAPE.fullmatch(secret):
            return None
        key, now = digest(secret), time.monotonic()
        with self._lock:
            hit = self._seen.get(key)
            if hit is not None and hit[0] > now:
                self._seen.move_to_end(key)
                return hit[1]
        record = verify_token(self.db, secret)
        if record is None:
            return None
        caller = Caller(record.owner, record.admin)
        with self._lock:
            self._seen[key] = (now + CACHE_SECONDS, caller)
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        return caller


def _unauthorized(message: str, error: str | None = None) -> DescentError:
    challenge = 'Bearer realm="descent"' + (f', error="{error}"' if error else "")
    return DescentError(message, code=ErrorCode.UNAUTHORIZED, field="Authorization",
                        headers={"WWW-Authenticate": challenge})


def register(app: Flask, settings: Settings, db: Database) -> str:
    """Resolve every request's caller before its handler runs; returns the auth mode."""
    mode = auth_mode(settings)
    tokens = TokenCache(db)

    @app.before_request
    def _authenticate() -> None:
        # No endpoint: a 404 or 405 follows, which tells nothing about anyone's jobs.
        if (request.endpoint is None or request.endpoint in OPEN_ENDPOINTS or request.blueprint == "dashboard"
                or request.method == "OPTIONS"):
            return
        if mode == "off":
            g.caller = LOCAL_ADMIN
            return
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if not header:
            raise _unauthorized("this request needs an API token: send 'Authorization: Bearer <token>' "
                                "(an admin creates one with 'descent tokens create --owner NAME')")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
        caller = tokens.caller(secret.strip())
        if caller is None:
            raise _unauthorized("the API token is unknown or revoked", "invalid_token")
        g.caller = caller

    return mode


def caller() -> Caller:
    """The caller of the request being handled."""
    return g.caller
