"""``/v1/jobs/<id>/surface`` and ``/v1/jobs/<id>/plot.png``: the objective on a grid, and a picture.

The surface is the job's own objective (its stored spec, checked again and compiled by
``service.expr``, in the job's dtype, on the CPU) on an n x n grid over two flat elements of x,
``coords``, the others held at the final x (x0 while the job has no result). The grid's ranges
default to the box around the path (x0, the recorded history's x at most ``PATH_POINTS`` rows of
it, the final x) and the catalog objective's known minima, widened by ``MARGIN`` on each side.
What one request may cost is bounded: n at most ``N_RANGE[1]``, n * n * (elements of x) at most
``MAX_GRID_VALUES`` (413 naming n), and ``GRID_SECONDS`` of evaluation (413 naming n). The
grids evaluated at once in one process share a memory budget (``DESCENT_MAX_OBJECTIVE_BYTES``):
a request reserves its grid's estimated bytes first, and one that finds no room within a few
seconds is a 503 with ``Retry-After`` (``waiting.GridBudget``).

``plot.png?kind=contour`` draws that surface with the path on it, start, end and minima marked
(the lesson's picture); ``kind=loss`` draws f per recorded step (at most ``LOSS_POINTS`` of them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from flask import Blueprint, Response

from service.api import plot
from service.api.auth import caller
from service.api.errors import bad_parameter
from service.api.openapi_parts import json_response, ref
from service.api.operations import AfterValidator, Field, Int, Operation, Query, Says, one_of
from service.api.services import services
from service.expr.grid import GridTooSlow, Surface, padded_range
from service.spec.minima import known_minima
from service.spec.surface import evaluation_peak, grid_bytes, job_surface, start_point
from service.errors import DescentError, ErrorCode
from service.jsonsafe import json_safe
from service.spec import CheckedSpec, check_spec
from service.store import JobRecord, data
from service.store import tensors as job_tensors
from service.store import jobs as job_store
from service.store.history import choose_steps, iter_history

bp = Blueprint("surface", __name__, url_prefix="/v1/jobs")

# Bounds of the parameters below (the OpenAPI document states these same values).
N_RANGE = (2, 400)
DEFAULT_N = 100
MAX_GRID_VALUES = 16_000_000  # n * n * (elements of x): the values one grid writes
GRID_SECONDS = 10.0
MAX_INDEX = 9_999_999  # a flat index in coords has at most 7 digits (max_elements is a million)
KINDS = ("contour", "loss")
MARGIN = 0.15
PATH_POINTS = 2_000
PATH_VALUES = 4_000_000  # x values read for the path, whatever the job's size
LOSS_POINTS = 2_000

_NUMBER = r"-?[0-9]{1,20}(?:\.[0-9]{0,20})?(?:[eE][-+]?[0-9]{1,2})?"
RANGE_PATTERN = rf"^{_NUMBER},{_NUMBER}$"
COORDS_PATTERN = r"^[0-9]{1,7},[0-9]{1,7}$"


def _lo_below_hi(raw: str) -> str:
    lo, hi = (float(v) for v in raw.split(","))
    if not lo < hi:
        raise ValueError(f"must have lo below hi, got {raw[:40]!r}")
    return raw


def _span(axis: str) -> object:
    return Field(None, pattern=RANGE_PATTERN, description=(
        f"lo,hi with lo < hi: the {axis} axis's range (default: the path and the known minima, with a margin of "
        f"{MARGIN:.0%} each side)"))


_Range = Annotated[str, AfterValidator(_lo_below_hi), Says("'{name}' must be two numbers lo,hi, got {raw!r}")]


class GridQuery(Query):
    n: Int = Field(DEFAULT_N, ge=N_RANGE[0], le=N_RANGE[1], description=(
        f"Grid points along each axis (default {DEFAULT_N}); n * n * (elements of x) may be at most "
        f"{MAX_GRID_VALUES:,} (413 otherwise)"))
    x_range: _Range = _span("first")
    y_range: _Range = _span("second")
    coords: Annotated[str, Says("'{name}' must be two flat indices i,j, got {raw!r}")] = Field(
        None, pattern=COORDS_PATTERN, description=(
            "i,j: the two flat indices of x on the axes (default 0,1; different, below the number of elements); the "
            "other elements stay at the final x (x0 before there is one)"))


class PlotQuery(GridQuery):
    kind: Annotated[one_of(KINDS), Says("'{name}' must be one of " + ", ".join(KINDS))] = Field(
        "contour", description="contour: f around the path, start, end and known minima marked; loss: f per "
                               "recorded step")


_FAILURES = (400, 401, 403, 404, 413, 503)
SURFACE = Operation("get", "/v1/jobs/{job_id}/surface", "getSurface", "The job's objective on an n x n grid around its path",
                    {"200": json_response(ref("Surface"), "f on the grid")}, _FAILURES, GridQuery)
PLOT = Operation("get", "/v1/jobs/{job_id}/plot.png", "getPlot",
                 "A picture of the job: the contour with its path, or f per step",
                 {"200": {"description": "A PNG image",
                          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}},
                 _FAILURES, PlotQuery)


@dataclass(frozen=True)
class _View:
    """What both endpoints need: the job, its surface, and the path and minima over coords."""

    job: JobRecord
    surface: Surface
    path: np.ndarray  # (points, 2), start first
    minima: list[tuple[float, float]]


@bp.get("/<job_id>/surface")
def surface(job_id: str):  # type: ignore[no-untyped-def]
    with services().waiters.held():  # seconds of evaluation: a waiting thread's, not an ordinary one's
        view = _view(job_id, SURFACE.args())
    s = view.surface
    return json_safe({"coords": list(s.coords), "x": s.xs.tolist(), "y": s.ys.tolist(), "f": s.f.tolist()})


@bp.get("/<job_id>/plot.png")
def plot_png(job_id: str):  # type: ignore[no-untyped-def]
    query = PLOT.args()  # a contour's parameters are checked whatever the kind
    kind = query.kind
    with services().waiters.held():  # a grid and a drawing: a waiting thread's work, not an ordinary one's
        if kind == "loss":
            job = job_store.get_job(services().db, job_id, owner=caller().owner_filter)
            steps, f = _losses(job)
            body = plot.loss_png(steps, f, _title(job))
        else:
            view = _view(job_id, query)
            s = view.surface
            names = (f"x[{s.coords[0]}]", f"x[{s.coords[1]}]")
            variable = view.job.spec.get("variable", "x")
            labels = (names[0].replace("x", variable, 1), names[1].replace("x", variable, 1))
            body = plot.contour_png(s.xs, s.ys, s.f, view.path, view.minima, labels, _title(view.job))
    return Response(body, mimetype="image/png", headers={"Cache-Control": "no-store"})


# --- parameters -------------------------------------------------------------------------------

def _coords(numel: int, raw: str | None) -> tuple[int, int]:
    if numel < 2:
        raise bad_parameter("coords", f"this job's x has {numel} element; a surface needs two")
    if raw is None:
        return 0, 1
    i, j = (int(v) for v in raw.split(","))
    if i == j or max(i, j) >= numel:
        raise bad_parameter("coords", f"'coords' must be two different flat indices from 0 to {numel - 1}")
    return i, j


def _range(raw: str | None) -> tuple[float, float] | None:
    if raw is None:
        return None
    lo, hi = (float(v) for v in raw.split(","))
    return lo, hi


def _grid_n(numel: int, n: int) -> int:
    if n * n * numel > MAX_GRID_VALUES:
        most = max(0, math.isqrt(MAX_GRID_VALUES // max(numel, 1)))
        raise DescentError(f"a grid of n={n} over x of {numel:,} elements writes {n * n * numel:,} values, over "
                           f"the limit of {MAX_GRID_VALUES:,} (n * n * elements); n may be at most {most} here",
                           code=ErrorCode.LIMIT_EXCEEDED, field="n", status=413)
    return n


# --- the surface ------------------------------------------------------------------------------

def _view(job_id: str, query: GridQuery) -> _View:
    svc = services()
    job = job_store.get_job(svc.db, job_id, owner=caller().owner_filter)
    numel = math.prod(job.shape)
    coords = _coords(numel, query.coords)
    n = _grid_n(numel, query.n)
    x_range, y_range = _range(query.x_range), _range(query.y_range)
    spec_job = data.job_with_values(svc.db, job)  # the objective reads the job's data
    checked = check_spec(spec_job.spec, svc.settings.limits, trace=False)
    x0 = start_point(checked)
    final = _final_x(job, numel)
    path = _path(job, numel, coords, x0, final)
    minima = _minima(checked, numel, coords)
    if x_range is None or y_range is None:
        box = np.concatenate([path, np.array(minima, dtype=np.float64).reshape(-1, 2)])
        x_range = x_range or padded_range(box[:, 0], MARGIN)
        y_range = y_range or padded_range(box[:, 1], MARGIN)
    peak = evaluation_peak(checked)
    try:
        with svc.grids.held(grid_bytes(checked, peak)):  # estimated before any evaluation
            grid = job_surface(checked, final, coords, np.linspace(*x_range, n), np.linspace(*y_range, n),
                               max_seconds=GRID_SECONDS, peak=peak)
    except GridTooSlow:
        raise DescentError(f"this objective's grid took over {GRID_SECONDS:g} seconds (the limit); ask for a "
                           "smaller n", code=ErrorCode.LIMIT_EXCEEDED, field="n", status=413) from None
    return _View(job, grid, path, minima)


def _final_x(job: JobRecord, numel: int) -> np.ndarray | None:
    """The result's x, flat, if the job has one and it is finite."""
    x = (job.result or {}).get("x")
    if x is None:
        return None
    if job_tensors.is_summary(x):  # a big x, kept in binary
        stored = job_tensors.load(services().db, job.id, "x")
        if stored is None:
            return None
        flat = stored.reshape(-1)
    else:
        flat = np.array(_floats(x), dtype=np.float64)
    return flat if flat.size == numel and bool(np.isfinite(flat).all()) else None


def _path(job: JobRecord, numel: int, coords: tuple[int, int], x0: np.ndarray,
          final: np.ndarray | None) -> np.ndarray:
    """The path over ``coords``: x0, then the recorded x (at most PATH_POINTS rows, spread over the
    run, first and last included), then the final x."""
    i, j = coords
    points = [[float(x0[i]), float(x0[j])]]
    if job.spec.get("record", {}).get("x", True):
        db = services().db
        steps = choose_steps(db, job.id, max(2, min(PATH_POINTS, PATH_VALUES // max(numel, 1))))
        if steps:
            for batch in iter_history(db, job.id, with_x=True, with_grad=False, numel=numel, steps=steps):
                if batch.x is not None and len(batch.x):
                    xs = np.asarray(batch.x, dtype=np.float64)
                    points.extend(xs[:, [i, j]].tolist())
    if final is not None:
        points.append([float(final[i]), float(final[j])])
    return np.array(points, dtype=np.float64)


def _minima(checked: CheckedSpec, numel: int, coords: tuple[int, int]) -> list[tuple[float, float]]:
    found = known_minima(checked, numel)
    return [(float(loc[coords[0]]), float(loc[coords[1]])) for loc, _ in found if len(loc) == numel]


def _losses(job: JobRecord) -> tuple[np.ndarray, np.ndarray]:
    db = services().db
    steps = choose_steps(db, job.id, LOSS_POINTS)
    got_steps: list[np.ndarray] = []
    got_f: list[np.ndarray] = []
    if steps:
        for batch in iter_history(db, job.id, with_x=False, with_grad=False, numel=0, steps=steps):
            got_steps.append(batch.steps)
            got_f.append(batch.f)
    if not got_steps:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(got_steps).astype(np.float64), np.concatenate(got_f)


def _floats(nested: Any) -> list[float]:
    """A stored nested list flat, with the strings "NaN" and "±Infinity" as floats."""
    if isinstance(nested, list):
        return [v for item in nested for v in _floats(item)]
    if isinstance(nested, str):
        return [float(nested) if nested in ("NaN", "Infinity", "-Infinity") else math.nan]
    return [float(nested)]


def _title(job: JobRecord) -> str:
    objective = job.spec.get("objective")
    text = objective.get("name", "") if isinstance(objective, dict) else str(objective)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{job.name or job.id[:8]}: {text} ({job.status})"


# --- the OpenAPI document ---------------------------------------------------------------------
