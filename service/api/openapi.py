"""``/openapi.json``: an OpenAPI 3.1 document whose request schema is generated from the same
pydantic models that validate submissions."""
from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.spec.model import JobSpec

bp = Blueprint("openapi", __name__)

_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _param(name: str, where: str = "query", kind: str = "integer", required: bool = False, doc: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": {"type": kind}, "description": doc}


def document() -> dict[str, Any]:
    spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components = spec_schema.pop("$defs", {})
    components["JobSpec"] = spec_schema
    components["Error"] = {
        "type": "object",
        "properties": {"error": {"type": "object", "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}}},
    }
    components["Job"] = {"type": "object", "properties": {
        k: {} for k in ("id", "status", "name", "tags", "spec", "queue", "created_at", "started_at",
                        "finished_at", "worker", "attempts", "cancel_requested", "error", "result")}}
    job = {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}
    job_id = _param("job_id", "path", "string", True)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Descent", "version": "1", "description": "Gradient-descent jobs over HTTP."},
        "paths": {
            "/v1/jobs": {
                "post": {"summary": "Submit a job", "parameters": [_param("Idempotency-Key", "header", "string")],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}}},
                         "responses": {"202": job, "400": _ERROR, "409": _ERROR, "413": _ERROR}},
                "get": {"summary": "List jobs in creation order",
                        "parameters": [_param("status", kind="string"), _param("tag", kind="string", doc="key:value"),
                                       _param("limit"), _param("cursor", kind="string")],
                        "responses": {"200": {"description": "A page of jobs and next_cursor"}, "400": _ERROR}},
            },
            "/v1/jobs/{job_id}": {"get": {"summary": "One job", "parameters": [job_id],
                                          "responses": {"200": job, "404": _ERROR}}},
            "/v1/jobs/{job_id}/cancel": {"post": {"summary": "Cancel a queued or running job", "parameters": [job_id],
                                                  "responses": {"202": job, "404": _ERROR, "409": _ERROR}}},
            "/v1/jobs/{job_id}/history": {"get": {
                "summary": "The per-step history, streamed",
                "parameters": [job_id, _param("start"), _param("limit"), _param("every"),
                               _param("fields", kind="string", doc="comma-separated: step,f,grad_norm,lr,x,grad"),
                               _param("format", kind="string", doc="json | csv | ndjson")],
                "responses": {"200": {"description": "JSON {rows, next_start}, CSV or NDJSON"}, "400": _ERROR, "404": _ERROR}}},
            "/v1/objectives": {"get": {"summary": "The objective catalog", "responses": {"200": {"description": "Objectives"}}}},
            "/v1/optimizers": {"get": {"summary": "Allowed optimisers and schedulers", "responses": {"200": {"description": "Optimisers"}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Database and broker reachable", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        },
        "components": {"schemas": components},
    }


@bp.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return document()
