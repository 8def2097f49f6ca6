"""``/healthz`` (the process answers) and ``/readyz`` (its database takes a write and its broker
answers, each within a deadline).

``/readyz`` answers within about PROBE_SECONDS whatever the servers do: each check runs on a
thread of its own and what has not answered by the deadline is reported down ("no answer within
1.5 s"). A check still under way when the next ``/readyz`` comes is waited on again rather than
started twice, so a black-holed server costs one thread per check, not one per request.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from flask import Blueprint, current_app

from service.api.openapi_parts import json_response, ref
from service.api.operations import Operation
from service.api.schemas import Health, Readiness, build
from service.api.services import services
from service.errors import first_line

bp = Blueprint("health", __name__)

# /readyz answers within this (plus a few milliseconds): under the 2 s a probe is given.
PROBE_SECONDS = 1.5


class Probe:
    """One check (database, broker) run on a thread of its own; at most one under way at a time."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.name = name
        self.check = check
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._result = "down: not checked yet"

    def _run(self) -> None:
        try:
            self.check()
            self._result = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its reason
            self._result = f"down: {first_line(exc, 300)}"

    def begin(self) -> tuple[threading.Thread, float]:
        """Start the check, unless one is under way: (its thread, when it started)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._started = time.monotonic()
                self._thread = threading.Thread(target=self._run, name=f"descent-readyz-{self.name}", daemon=True)
                self._thread.start()
            return self._thread, self._started

    def state(self, begun: tuple[threading.Thread, float], deadline: float) -> str:
        """"ok", or "down: the reason", by ``deadline`` (a ``time.monotonic()``)."""
        thread, started = begun
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return (f"down: no answer within {PROBE_SECONDS:g} s (checking for "
                    f"{time.monotonic() - started:.1f} s)")
        return self._result


def _probes() -> dict[str, Probe]:
    """This app's probes, made on first use."""
    probes = current_app.extensions.get("descent.readyz")
    if probes is None:
        svc = services()
        probes = current_app.extensions.setdefault("descent.readyz", {
            "database": Probe("database", svc.db.check_writable),
            "broker": Probe("broker", lambda: svc.dispatcher.ping(timeout=PROBE_SECONDS)),
        })
    return probes


HEALTHZ = Operation("get", "/healthz", "healthz", "Liveness", {"200": json_response(
    ref("Health"), "The process answers; requests waiting or streaming, and their bound")}, (400, 403), public=True)
READYZ = Operation("get", "/readyz", "readyz", "Database and broker reachable", {
    "200": json_response(ref("Readiness"), "Ready"),
    "503": json_response(ref("Readiness"), "Not ready: checks says which part is down")}, (400, 403), public=True)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    """The process answers; and how many of its DESCENT_MAX_WAITERS slots are in use."""
    slots = services().waiters
    return build(Health, {"status": "ok", "waiting": slots.in_use, "max_waiters": slots.limit})


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    """Ready when the database takes a write (a read-only database is not ready) and the broker
    answers, each within PROBE_SECONDS; ``checks`` names each one's state: ``ok`` or ``down: why``."""
    deadline = time.monotonic() + PROBE_SECONDS
    probes = _probes()
    begun = {name: probe.begin() for name, probe in probes.items()}  # all at once, then wait
    checks = {name: probes[name].state(begun[name], deadline) for name in probes}
    ready = all(v == "ok" for v in checks.values())
    return build(Readiness, {"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503
