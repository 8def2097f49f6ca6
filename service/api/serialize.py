"""JSON and CSV shapes of jobs and history rows, as the API returns them."""
from __future__ import annotations

from typing import Any, Iterable

from service.jsonsafe import json_safe
from service.store import JobRecord

HISTORY_FIELDS = ("step", "f", "grad_norm", "lr", "x", "grad")


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def job_json(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id, "status": job.status, "name": job.name, "tags": job.tags, "spec": job.spec,
        "queue": job.queue, "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "worker": job.worker, "attempts": job.attempts,
        "cancel_requested": job.cancel_requested, "error": job.error, "result": json_safe(job.result),
        "links": {"self": f"/v1/jobs/{job.id}", "history": f"/v1/jobs/{job.id}/history"},
    }


def reshape(flat: list[float], shape: list[int]) -> Any:
    """A flat list as nested lists of ``shape`` (the shape of the job's x)."""
    out: Any = flat
    for dim in reversed(shape[1:]):
        out = [out[i:i + dim] for i in range(0, len(out), dim)]
    return out


def row_json(row: dict[str, Any], fields: Iterable[str], shape: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        value = row.get(name)
        if name in ("x", "grad"):
            if value is not None:
                out[name] = json_safe(reshape(value, shape))
        elif name == "step":
            out[name] = value
        else:
            out[name] = json_safe(value)
    return out


def csv_header(fields: Iterable[str], numel: int) -> list[str]:
    header: list[str] = []
    for name in fields:
        if name in ("x", "grad"):
            header.extend(f"{name}_{i}" for i in range(numel))
        else:
            header.append(name)
    return header


def csv_row(row: dict[str, Any], fields: Iterable[str], numel: int) -> list[Any]:
    out: list[Any] = []
    for name in fields:
        value = row.get(name)
        if name in ("x", "grad"):
            out.extend(value if value is not None else [""] * numel)
        else:
            out.append(value)
    return [repr(v) if isinstance(v, float) else v for v in out]
