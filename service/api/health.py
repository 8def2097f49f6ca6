"""``/healthz`` (the process answers) and ``/readyz`` (its database and broker answer too)."""
from __future__ import annotations

from flask import Blueprint

from service.api.schemas import Health, Readiness, build
from service.api.services import services
from service.errors import first_line

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    """The process answers; and how many of its DESCENT_MAX_WAITERS slots are in use."""
    slots = services().waiters
    return build(Health, {"status": "ok", "waiting": slots.in_use, "max_waiters": slots.limit})


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    svc = services()
    checks: dict[str, str] = {}
    try:
        svc.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its reason
        checks["database"] = f"down: {first_line(exc, 200)}"
    try:
        svc.dispatcher.ping()
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"down: {first_line(exc, 200)}"
    ready = all(v == "ok" for v in checks.values())
    return build(Readiness, {"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503
