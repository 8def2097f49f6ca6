"""``/v1/workers``: the fleet, for admins.

Each worker as its heartbeat row says (``service.store.fleet``): alive, or lost after
DESCENT_WORKER_LOST_AFTER missed heartbeats (with ``lost_since``), or stopped after a clean
shutdown (with ``stopped_at``), the job it runs now and the jobs it has finished. Lost and
stopped workers stay listed for DESCENT_WORKER_RETENTION_SECONDS.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.api.auth import caller
from service.api.openapi_parts import json_response, ref
from service.api.operations import Operation
from service.api.schemas import WorkerList, build
from service.api.serialize import iso
from service.api.services import services
from service.errors import DescentError, ErrorCode
from service.store import WorkerRecord
from service.store.fleet import list_workers

bp = Blueprint("workers", __name__, url_prefix="/v1/workers")


def worker_json(worker: WorkerRecord) -> dict[str, Any]:
    return {
        "id": worker.id, "host": worker.hostname, "pid": worker.pid, "queues": worker.queues,
        "device": worker.device, "device_name": worker.device_name, "cuda_memory": worker.cuda_memory,
        "versions": worker.versions or {}, "started_at": iso(worker.started_at),
        "last_heartbeat": iso(worker.last_heartbeat), "state": worker.state,
        "lost_since": iso(worker.lost_since), "stopped_at": iso(worker.stopped_at),
        "current_job": worker.current_job, "jobs_done": worker.jobs_done,
    }


LIST = Operation("get", "/v1/workers", "listWorkers", "The fleet: every worker, alive, lost or stopped (admins only)",
                 {"200": json_response(ref("WorkerList"), "The workers")}, (400, 401, 403, 503))


@bp.get("")
def list_() -> dict[str, Any]:
    if not caller().admin:
        raise DescentError("the workers view is for admins (a token made with --admin)", code=ErrorCode.FORBIDDEN)
    svc = services()
    return build(WorkerList, {"workers": [worker_json(w) for w in list_workers(svc.db, svc.settings.worker_lost_seconds)]})
