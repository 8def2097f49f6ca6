"""The pieces an OpenAPI operation is written with: a component reference, a JSON response and
the error responses by status.

A leaf: it imports no blueprint, so the blueprints that declare their operations
(``service.api.operations``) and ``service.api.openapi``, which gathers them, both import it, in
one direction only.
"""
from __future__ import annotations

from typing import Any

REF_TEMPLATE = "#/components/schemas/{model}"  # pydantic's ref_template: a component

_ERROR_WHEN = {
    "400": "Bad request: invalid JSON, spec, query parameter or header, or a Host this service does not "
           "answer (error.field names it)",
    "401": "No bearer token, or one that is unknown or revoked (DESCENT_AUTH=required); WWW-Authenticate says which",
    "403": "Forbidden: a browser Origin that is not allowed (DESCENT_ALLOWED_ORIGINS)",
    "404": "No such job or sweep (or not yours)",
    "409": "Conflict: the job has finished, or the Idempotency-Key was used for another spec or sweep request",
    "413": "The body (max_body_bytes), or the start or history the job would make, is over a configured limit",
    "415": "A request with a body must send Content-Type: application/json (POST /v1/jobs and /v1/sweeps: or multipart/form-data)",
    "429": "A per-owner quota is used up; retry after Retry-After seconds",
    "503": "The database is unavailable, or (history, events, surface, plot) this process already serves "
           "DESCENT_MAX_WAITERS waiting, streaming or grid requests; see Retry-After",
}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": REF_TEMPLATE.format(model=name)}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response with a JSON body of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Any]:
    """The error responses for ``statuses``: each an ``Error`` body, with the headers a 401 and a 429 carry."""
    out: dict[str, Any] = {}
    for status in statuses:
        response = json_response(ref("Error"), _ERROR_WHEN[str(status)])
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {
                "description": "Bearer realm=\"descent\", with error=\"invalid_request\" or \"invalid_token\"",
                "required": True, "schema": {"type": "string"}}}
        if status == 429:
            response["headers"] = {"Retry-After": {
                "description": "Seconds until the quota allows another request", "required": True,
                "schema": {"type": "integer", "minimum": 0}}}
        out[str(status)] = response
    return out
