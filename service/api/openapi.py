"""``/openapi.json``: an OpenAPI 3.1 document generated from the operations' declarations.

Every operation is declared once, beside its handler (``service.api.operations.Operation``): its
path, method, query model, request body, responses and errors. The handler parses its query with
that declaration and this module writes the document from the same declarations, with the
component schemas (``service.api.components``) for the configured limits, so the document always
matches the running service. 405 is automatic for a method a path does not have.
``scripts/fuzz.sh`` holds the live API to this document with Schemathesis.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from service.api import (catalog, components, deletion, events, health, history, jobs, metrics,  # noqa: F401
                         surface, sweeps, tensors, workers)
from service.api.openapi_parts import json_response
from service.api.operations import Operation, declared
from service.config import Limits

bp = Blueprint("openapi", __name__)

# --- the document ---------------------------------------------------------------------------

def document(limits: Limits | None = None, auth: str = "required") -> dict[str, Any]:
    """The OpenAPI document for a service configured with ``limits`` (the defaults if None) and
    ``auth`` (``required``: a bearer token on every operation but the open ones; ``off``: none)."""
    limits = limits or Limits()
    paths: dict[str, Any] = {}
    for (path, method), operation in declared().items():
        paths.setdefault(path, {})[method] = operation.openapi(limits)
    if auth == "off":  # no request is refused for want of a token
        for operations in paths.values():
            for operation in operations.values():
                operation["responses"].pop("401", None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Descent", "version": "1",
                 "description": "Gradient-descent jobs over HTTP. Every error is JSON: "
                                "{\"error\": {\"code\", \"message\", \"field\"}}. A method a path does not "
                                "have is answered 405 with Allow."},
        "servers": [{"url": "/"}],
        # With DESCENT_AUTH=off (the default on a loopback bind) no operation needs a token.
        "security": [{"bearer": []}] if auth != "off" else [],
        "paths": paths,
        "components": {
            "schemas": components.schemas(limits),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API token (descent tokens create --owner NAME). With DESCENT_AUTH=off "
                               "(the default on a loopback bind) no token is needed and every request acts "
                               "as admin."}},
        },
    }


OPENAPI = Operation("get", "/openapi.json", "openapi", "This document", {"200": json_response(
    {"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1")}, (400, 403), public=True)


@bp.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    settings = current_app.extensions["descent"].settings
    return document(settings.limits, current_app.config.get("DESCENT_AUTH", "required"))
