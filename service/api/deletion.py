"""``DELETE /v1/jobs/<id>`` and ``DELETE /v1/sweeps/<id>``: a job (or every job of a sweep) with
its history, tags, checkpoint and data, for its owner or an admin (``service.store.deletion``).

A queued or running job is cancelled first; a worker still running it stops at its next chunk
without writing another row. Another owner's job or sweep is a 404 exactly as an unknown id is,
and so is a second DELETE (which changes nothing). The answer is 200 with what was removed.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.api.auth import caller
from service.api.openapi_parts import json_response, ref
from service.api.operations import Operation
from service.api.schemas import Deleted, build
from service.api.services import services
from service.store import deletion

bp = Blueprint("deletion", __name__)


def deleted_json(kind: str, ident: str, removed: deletion.Removed) -> dict[str, Any]:
    return build(Deleted, {"id": ident, "deleted": kind, "removed": removed.as_json()})


DELETED = {"200": json_response(ref("Deleted"), "What went")}
DELETE_JOB = Operation("delete", "/v1/jobs/{job_id}", "deleteJob",
                       "Delete a job: its history, tags, checkpoint and data (a queued or running job is cancelled "
                       "first; its worker writes no further row)", DELETED, (400, 401, 403, 404, 503))
DELETE_SWEEP = Operation("delete", "/v1/sweeps/{sweep_id}", "deleteSweep",
                         "Delete a sweep and every job of it, as DELETE /v1/jobs/{job_id} deletes one",
                         DELETED, (400, 401, 403, 404, 503))


@bp.delete("/v1/jobs/<job_id>")
def delete_job(job_id: str):  # type: ignore[no-untyped-def]
    removed = deletion.delete_job(services().db, job_id, owner=caller().owner_filter)
    return deleted_json("job", job_id, removed)


@bp.delete("/v1/sweeps/<sweep_id>")
def delete_sweep(sweep_id: str):  # type: ignore[no-untyped-def]
    removed = deletion.delete_sweep(services().db, sweep_id, owner=caller().owner_filter)
    return deleted_json("sweep", sweep_id, removed)
