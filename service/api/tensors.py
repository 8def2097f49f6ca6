"""``/v1/jobs/<id>/x``, ``/grad`` and ``/x0``: a job's tensors by themselves, bit for bit.

A job document carries a big x only as a summary (``service.store.tensors``); its values come from
here, as ``.npy`` (the default, or ``Accept: application/x-npy``) or as JSON (``?format=json`` or
``Accept: application/json``): float64, x0's shape, streamed in pieces.
"""
from __future__ import annotations

import io
from typing import Annotated, Iterator

import numpy as np
from flask import Blueprint, Response, request

from service.api.auth import caller
from service.api.history import MAX_STEP
from service.api.openapi_parts import ref
from service.api.operations import Field, Int, Operation, Query, Says, one_of
from service.api.serialize import json_array
from service.api.services import services
from service.errors import DescentError, ErrorCode
from service.spec import SpecError, check_spec
from service.spec.start import start_tensor
from service.store import JobRecord
from service.store import data as data_store
from service.store import jobs as job_store
from service.store import tensors as job_tensors

bp = Blueprint("tensors", __name__, url_prefix="/v1/jobs")

NAMES = ("x", "grad", "x0")
FORMATS = ("npy", "json")
NPY = "application/x-npy"
PIECE = 1 << 20  # bytes of values written at a time


class FinalQuery(Query):
    format: Annotated[one_of(FORMATS), Says("'{name}' must be one of: " + ", ".join(FORMATS))] = Field(
        None, description="npy (the default unless Accept prefers application/json) or json")
    step: Annotated[Int, Says("'{name}' must be a whole number from 0 to {le:,}")] = Field(
        None, ge=0, le=MAX_STEP, description="The value the history recorded at this step (404 if it recorded none "
                                             "there), not the final one")


class StartQuery(Query):
    format: Annotated[one_of(FORMATS), Says("'{name}' must be one of: " + ", ".join(FORMATS))] = Field(
        None, description="npy (the default unless Accept prefers application/json) or json")


def _operation(name: str, operation_id: str, summary: str, when: str) -> Operation:
    return Operation("get", f"/v1/jobs/{{job_id}}/{name}", operation_id, summary, {"200": {
        "description": "The tensor", "content": {NPY: {"schema": {"type": "string", "format": "binary"}},
                                                 "application/json": {"schema": ref("TensorValues")}}}},
        (400, 401, 403, 404, 409, 503), StartQuery if name == "x0" else FinalQuery,
        description="float64 values in x0's shape, bit for bit: a .npy file, or JSON. " + when)


OPERATIONS = {
    "x": _operation("x", "getJobX", "The job's final x", "404: it ended without one; 409: it has not finished"),
    "grad": _operation("grad", "getJobGrad", "The gradient at the job's final x",
                       "404: not recorded (record.grad, or steps 0); 409: it has not finished"),
    "x0": _operation("x0", "getJobX0", "The job's starting point (a generated one drawn as the engine draws it)", ""),
}


def _format(name: str) -> str:
    """``?format=``, else what ``Accept`` prefers of .npy and JSON (.npy when it says neither)."""
    fmt = OPERATIONS[name].args().format
    if fmt is not None:
        return fmt
    best = request.accept_mimetypes.best_match([NPY, "application/json"], default=NPY)
    return "json" if best == "application/json" else "npy"


def _absent(job: JobRecord, what: str) -> DescentError:
    return DescentError(f"job {job.id} has no {what}", code=ErrorCode.NOT_FOUND, field=None)


def _step(name: str) -> int | None:
    """``?step=N``: x or grad as the history recorded it at step N, not the final one."""
    return OPERATIONS[name].args().step


def tensor(job: JobRecord, name: str, step: int | None = None) -> np.ndarray:
    """The job's ``name`` tensor (at history ``step`` when given) as a float64 array of x's shape;
    NOT_FOUND or CONFLICT saying why there is none."""
    db = services().db
    if step is not None:
        values = job_tensors.recorded(db, job.id, step, name)
        if values is None:
            raise _absent(job, f"{name} recorded at step {step} (see its spec's record: every, x, grad)")
        return values.reshape(job.shape)
    if name == "x0":
        return _start(job)
    result = job.result
    if result is None or result.get("x") is None:
        raise DescentError(f"job {job.id} is {job.status}: it has no final x yet" if not job.finished
                           else f"job {job.id} {job.status} without a final x",
                           code=ErrorCode.CONFLICT if not job.finished else ErrorCode.NOT_FOUND)
    entry = result.get(name)
    if entry is None:
        raise _absent(job, "final gradient (it records one with record.grad, or with steps 0)")
    if job_tensors.is_summary(entry):
        values = job_tensors.load(db, job.id, name)
        if values is None:  # deleted since it was read
            raise DescentError(f"no job with id {job.id!r}", code=ErrorCode.NOT_FOUND)
        return values
    return job_tensors.as_array(entry).reshape(job.shape)


def _start(job: JobRecord) -> np.ndarray:
    """x0 as the job started from it (a generated one drawn again, the same way the engine does)."""
    x0 = job.spec.get("x0")
    if data_store.is_reference(x0):
        values = data_store.stored_array(services().db, job.owner, x0["sha256"])
        if values is None:  # deleted since it was read
            raise DescentError(f"no job with id {job.id!r}", code=ErrorCode.NOT_FOUND)
        return values
    if isinstance(x0, list):
        return job_tensors.as_array(x0).reshape(job.shape)
    spec = data_store.job_with_values(services().db, job, ("data",)).spec
    try:
        checked = check_spec(spec, services().settings.limits, trace=False)
    except SpecError as exc:  # a spec stored under other limits
        raise DescentError(f"job {job.id}'s stored spec no longer passes this service's limits: {exc.message}",
                           code=ErrorCode.CONFLICT) from None
    return start_tensor(checked).numpy().reshape(job.shape)


def npy_pieces(array: np.ndarray) -> Iterator[bytes]:
    """``array`` as a .npy file (version 1.0, little-endian float64, C order), in pieces."""
    array = np.ascontiguousarray(array, dtype="<f8")
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(array))
    yield head.getvalue()
    raw = memoryview(array.reshape(-1)).cast("B")
    for first in range(0, len(raw), PIECE):
        yield bytes(raw[first:first + PIECE])


def npy_bytes(array: np.ndarray) -> int:
    """The length of ``npy_pieces(array)``."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(
        np.ascontiguousarray(array, dtype="<f8")))
    return len(head.getvalue()) + array.size * 8


def _json_pieces(name: str, array: np.ndarray) -> Iterator[str]:
    shape = list(array.shape)
    yield f'{{"name": "{name}", "dtype": "float64", "shape": {shape}, "values": '
    yield from json_array(array, shape)
    yield "}"


def _answer(job_id: str, name: str):  # type: ignore[no-untyped-def]
    fmt = _format(name)
    step = _step(name) if name != "x0" else None
    job = job_store.get_job(services().db, job_id, owner=caller().owner_filter)
    array = tensor(job, name, step)
    if fmt == "json":
        return Response(_json_pieces(name, array), mimetype="application/json")
    return Response(npy_pieces(array), mimetype=NPY, headers={
        "Content-Length": str(npy_bytes(array)),
        "Content-Disposition": f'attachment; filename="{job_id}-{name}.npy"'})


@bp.get("/<job_id>/x")
def get_x(job_id: str):  # type: ignore[no-untyped-def]
    """The job's final x."""
    return _answer(job_id, "x")


@bp.get("/<job_id>/grad")
def get_grad(job_id: str):  # type: ignore[no-untyped-def]
    """The gradient at the job's final x, when it was recorded."""
    return _answer(job_id, "grad")


@bp.get("/<job_id>/x0")
def get_x0(job_id: str):  # type: ignore[no-untyped-def]
    """The job's starting point."""
    return _answer(job_id, "x0")
