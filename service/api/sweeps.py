"""``/v1/sweeps``: many jobs from one request (a base spec, a grid over its dotted keys, starts),
their counts and summary, their jobs, and cancelling them all.

Submission checks the request's structure, job count (413 past DESCENT_MAX_SWEEP_JOBS) and grid
combinations (413 past ``MAX_GRID_COMBINATIONS``), then the first combination and, from the sizes
alone, the numbers of x0 (413) and the owner's quotas (429) before expanding anything: a sweep that
cannot fit is refused in milliseconds, building nothing. Then it checks each distinct combination
of grid values once, stores the sweep and every job in one transaction (quotas checked again
there: one submission of N jobs) and sends the tasks.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Callable

from flask import Blueprint
from sqlalchemy.exc import IntegrityError

from service.api.auth import caller
from service.api.errors import bad_parameter
from service.api.body import is_upload, read_json_body, read_upload, upload_spec
from service.api.components import SWEEP_EXAMPLES, SWEEP_UPLOAD
from service.api.jobs import REPLAYED, idempotency_header, idempotency_key, request_body, route_queue
from service.api.openapi_parts import json_response, ref
from service.api.operations import Field, Int, Operation, Query, Says, one_of, text
from service.api.schemas import JobPage, SweepDetail, SweepGrid, SweepPage, SweepView, build
from service.api.serialize import job_model
from service.api.services import services
from service.jsonsafe import json_safe
from service.queue import messages_for
from service.spec.batchkey import batch_key
from service.spec.sweep import admit, best_minimum, check_storable, expand, grid_values, job_specs, plan_sweep
from service.store import JobStatus
from service.store import data as data_store
from service.store import quotas
from service.store import sweeps as sweep_store
from service.store.records import SweepRecord

bp = Blueprint("sweeps", __name__, url_prefix="/v1/sweeps")

SUMMARY_LIMIT = (1, 1000, 100)  # low, high, default
JOBS_LIMIT = (1, 1000, 100)
LIST_LIMIT = (1, 1000, 100)


def sweep_json(sweep: SweepRecord, counts: tuple[dict[str, int], int]) -> dict[str, Any]:
    """The sweep as the API answers it, built through the ``SweepView`` model; ``counts``: its jobs by
    status and how many diverged (``sweep_store.counts_of``)."""
    return build(SweepView, _sweep_fields(sweep, counts))


def _counts(sweep_id: str) -> tuple[dict[str, int], int]:
    return sweep_store.counts_of(services().db, [sweep_id])[sweep_id]


def _sweep_fields(sweep: SweepRecord, counts: tuple[dict[str, int], int]) -> dict[str, Any]:
    by_status, diverged = counts
    return {
        "id": sweep.id, "owner": sweep.owner, "name": sweep.name, "tags": sweep.tags,
        "created_at": sweep.created_at, "jobs": sweep.jobs, "counts": by_status,
        "tolerance": sweep.tolerance, "grid": {key: values for key, values in sweep.grid},
        "starts": sweep.starts, "base": sweep.base, "diverged": diverged,
        "links": {"self": f"/v1/sweeps/{sweep.id}", "jobs": f"/v1/sweeps/{sweep.id}/jobs",
                  "cancel": f"/v1/sweeps/{sweep.id}/cancel"},
    }


def _page(limits: tuple[int, int, int], what: str) -> type[Query]:
    """A page's parameters: ``limit`` (``limits`` is low, high, default) and ``cursor``."""
    low, high, default = limits

    class Page(Query):
        limit: Int = Field(default, ge=low, le=high, description=f"{what} per page (default {default})")
        cursor: text() = Field(None, description="next_cursor from the previous page")
    return Page


SWEEP = json_response(ref("SweepView"), "The sweep")
ERRORS = (400, 401, 403, 404, 503)
LIST = Operation("get", "/v1/sweeps", "listSweeps", "List sweeps, newest first, a page at a time, with their counts",
                 {"200": {**json_response(ref("SweepPage"), "A page of sweeps, newest first"), "links": {
                     "NextPage": {"operationId": "listSweeps", "description": "The next page",
                                  "parameters": {"cursor": "$response.body#/next_cursor"}}}}},
                 (400, 401, 403, 503), _page(LIST_LIMIT, "Sweeps"),
                 description="The caller's sweeps (an admin's: everyone's), each as POST /v1/sweeps answers it: its "
                             "jobs by status, and how many diverged.")
SUBMIT = Operation("post", "/v1/sweeps", "submitSweep", "Submit a sweep: many jobs from one base spec, a grid and starts", {
    "202": {**SWEEP, "description": "Accepted: every job stored and queued (or, with a known Idempotency-Key, the "
                                    "sweep it made)",
            "headers": {"Location": {"description": "The sweep's URL", "required": True, "schema": {"type": "string"}},
                        "Idempotent-Replayed": REPLAYED},
            "links": {"GetSweep": {"operationId": "getSweep", "parameters": {"sweep_id": "$response.body#/id"}}}}},
    (400, 401, 403, 409, 413, 415, 429, 503), headers=(idempotency_header("sweep", "request"),),
    body=request_body("SweepRequest", SWEEP_EXAMPLES, SWEEP_UPLOAD))


class DetailQuery(_page(SUMMARY_LIMIT, "Items")):  # type: ignore[misc]
    sort: Annotated[one_of(sweep_store.SORTS), Says("'{name}' must be one of " + ", ".join(sweep_store.SORTS))] = Field(
        "created", description="created: the sweep's order (default); f: ascending final f, unfinished last")


GET = Operation("get", "/v1/sweeps/{sweep_id}", "getSweep", "A sweep: counts by status and a page of its summary",
                {"200": json_response(ref("SweepDetail"), "The sweep and a page of its summary")}, ERRORS, DetailQuery)
JOBS = Operation("get", "/v1/sweeps/{sweep_id}/jobs", "listSweepJobs", "A sweep's jobs in its order, a page at a time",
                 {"200": json_response(ref("JobPage"), "A page of the sweep's jobs")}, ERRORS, _page(JOBS_LIMIT, "Items"))


class GridQuery(Query):
    rows: text() = Field(None, description="A grid key of the sweep (optimizer.lr, ...): its values down the rows")
    cols: text() = Field(None, description="Another grid key: its values across the columns (needs rows)")
    stat: Annotated[one_of(sweep_store.STATS),
                    Says("'{name}' must be one of " + ", ".join(sweep_store.STATS) + ", got {raw!r}")] = Field(
        "min", description="What a cell holds of its jobs' finite final f: min (default), median or mean")


GRID = Operation(
    "get", "/v1/sweeps/{sweep_id}/grid", "getSweepGrid", "Final f of every job of a sweep over two of its grid keys",
    {"200": json_response(ref("SweepGrid"), "The grid of final f")}, ERRORS, GridQuery,
    description="Computed in SQL over all the sweep's jobs: per cell (a value of the rows key and one of the cols key), "
                "the stat of the finite final f of its succeeded jobs, its jobs, the jobs the stat is over, and those "
                "that diverged (left out of the stat). Without cols, one column; without rows and cols, one cell. A "
                "key that is not one of the sweep's grid keys, or an unknown stat, is a 400 naming the parameter.")
CANCEL = Operation("post", "/v1/sweeps/{sweep_id}/cancel", "cancelSweep", "Cancel every queued or running job of a sweep",
                   {"202": {**SWEEP, "description": "Queued jobs cancelled; running ones asked to stop"}},
                   (400, 401, 403, 404, 413, 415, 503))


@bp.get("")
def list_sweeps():  # type: ignore[no-untyped-def]
    """The caller's sweeps (an admin's: everyone's), newest first, a page at a time, each with its
    counts by status."""
    query = LIST.args()
    svc = services()
    try:
        page, next_cursor = sweep_store.list_sweeps(svc.db, query.limit, query.cursor, owner=caller().owner_filter)
    except (ValueError, UnicodeError):
        raise _cursor_error() from None
    counts = sweep_store.counts_of(svc.db, [sweep.id for sweep in page])
    return build(SweepPage, {"sweeps": [_sweep_fields(sweep, counts[sweep.id]) for sweep in page],
                             "next_cursor": next_cursor})


@bp.get("/<sweep_id>/grid")
def grid(sweep_id: str):  # type: ignore[no-untyped-def]
    """Final f of every job of the sweep over two grid keys (``?rows=&cols=``), each cell's
    ``stat`` (min, median or mean) computed in SQL."""
    query = GRID.args()
    stat, rows, cols = query.stat, query.rows, query.cols
    sweep = sweep_store.get_sweep(services().db, sweep_id, owner=caller().owner_filter)
    keys = [key for key, _ in sweep.grid]
    for name, key in (("rows", rows), ("cols", cols)):
        if key is not None and key not in keys:
            known = ", ".join(keys) if keys else "none: this sweep has no grid"
            raise bad_parameter(name, f"'{name}' must be one of this sweep's grid keys ({known}), got {key[:80]!r}")
    if rows is not None and rows == cols:
        raise bad_parameter("cols", "'cols' must be another grid key than 'rows'")
    if cols is not None and rows is None:
        raise bad_parameter("rows", "'rows' is needed with 'cols'")
    cells = sweep_store.grid(services().db, sweep, rows, cols, stat)
    return build(SweepGrid, {"rows_key": rows, "cols_key": cols, "stat": stat, **json_safe(cells)})


@bp.post("")
def submit():  # type: ignore[no-untyped-def]
    """Store the sweep and its jobs, then send their tasks; with an Idempotency-Key seen before
    (and the same request), answer with the sweep it made, making nothing."""
    svc = services()
    limits = svc.settings.limits
    body = upload_spec(*read_upload(), limits.max_elements, within="base") if is_upload() else read_json_body()
    key, who = idempotency_key(), caller()
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest() if key else None
    if key is not None:
        made = sweep_store.sweep_for_key(svc.db, who.owner, key, digest)  # type: ignore[arg-type]
        if made is not None:
            return _replayed(made)
    plan = plan_sweep(body, limits)  # 413 here (jobs, grid combinations), before anything is expanded
    check_storable(plan)
    admission = admit(plan, limits)  # one spec check; 413 past the x0 numbers
    if not who.admin:  # 429 here, from the sizes alone: a sweep that cannot fit is never built
        quotas.check_ahead(svc.db, who.owner, svc.settings.quotas, jobs=admission.jobs, values=admission.values)
    variants = expand(plan, limits)
    # Looked up before the store's transaction opens (SQLite: one writer, which that would be).
    batch = svc.settings.batch_max  # a variant's starts run in batches of up to this many jobs
    queues = [route_queue(v.checked.spec.device, v.checked.numel,
                          min(len(v.starts), batch) if batch_key(v.checked) else 1) for v in variants]

    def jobs():  # type: ignore[no-untyped-def]
        for variant, queue in zip(variants, queues):
            shape, reserved = list(variant.checked.shape), variant.checked.recorded_values
            shared = batch_key(variant.checked)
            for _, spec in job_specs(variant):
                yield spec, shape, queue, reserved, shared

    try:
        sweep, ids = sweep_store.create_sweep(
            svc.db, owner=who.owner, name=plan.name, tags=plan.tags, base=json_safe(plan.stored_base()),
            grid=json_safe([[name, values] for name, values in plan.grid]), starts=plan.stored_starts(),
            n_starts=plan.n_starts, tolerance=plan.tolerance, jobs=jobs(), count=plan.jobs,
            values=sum(v.checked.recorded_values * len(v.starts) for v in variants),
            quotas=None if who.admin else svc.settings.quotas, idempotency_key=key, request_digest=digest)
    except IntegrityError:  # the same key, sent twice at once: the other one made the sweep
        made = sweep_store.sweep_for_key(svc.db, who.owner, key, digest) if key else None  # type: ignore[arg-type]
        if made is None:
            raise
        return _replayed(made)
    # Sent after the answer; a broker outage stops the sending at its first failure, and the
    # reconciler sends jobs queued for longer than DESCENT_REQUEUE_AFTER, these among them.
    svc.dispatcher.send_all_in_background(messages_for(ids, svc.settings.batch_max))
    counts = {status.value: 0 for status in JobStatus}
    counts[JobStatus.QUEUED.value] = len(ids)
    return sweep_json(sweep, (counts, 0)), 202, {"Location": f"/v1/sweeps/{sweep.id}"}


def _replayed(sweep: SweepRecord) -> tuple[dict[str, Any], int, dict[str, str]]:
    return (sweep_json(sweep, _counts(sweep.id)), 202,
            {"Location": f"/v1/sweeps/{sweep.id}", "Idempotent-Replayed": "true"})


def _page_of(operation: Operation, sweep_id: str) -> tuple[int, str | None, Any]:
    """The page's ``limit`` and ``cursor``, checked, and the caller's sweep (another owner's is a 404)."""
    query = operation.args()
    return query.limit, query.cursor, sweep_store.get_sweep(services().db, sweep_id, owner=caller().owner_filter)


def _cursor_error() -> Exception:
    return bad_parameter("cursor", "'cursor' is not a cursor this service returned for this listing")


@bp.get("/<sweep_id>")
def get(sweep_id: str):  # type: ignore[no-untyped-def]
    """The sweep, its counts by status and a page of its summary (``?sort=created|f``)."""
    sort = GET.args().sort
    limit, cursor, sweep = _page_of(GET, sweep_id)
    svc = services()
    try:
        items, next_cursor = sweep_store.summary(svc.db, sweep, limit, cursor, sort,
                                                  _minimum_finder(svc.db, sweep.owner))
    except (ValueError, UnicodeError):
        raise _cursor_error() from None
    for item in items:
        values, start = grid_values(sweep.grid, sweep.n_starts, item["index"])
        item["grid"], item["start"] = values, start
    return build(SweepDetail, {**_sweep_fields(sweep, _counts(sweep.id)), "sort": sort,
                               "summary": json_safe(items), "next_cursor": next_cursor})


def _minimum_finder(db: Any, owner: str) -> Callable[[dict[str, Any], int], float | None]:
    """``best_minimum`` for a page of a sweep's jobs (``owner``'s): the stored data's values read once per
    distinct data, and each distinct objective solved once (a sweep's jobs mostly share both)."""
    found: dict[str, float | None] = {}
    values: dict[str, dict[str, Any] | None] = {}

    def best(spec: dict[str, Any], numel: int) -> float | None:
        key = json.dumps([spec, numel], sort_keys=True)
        if key not in found:
            data = spec.get("data")
            if not data:
                found[key] = best_minimum(spec, numel)
            else:
                refs = json.dumps(data, sort_keys=True)
                if refs not in values:
                    values[refs] = data_store.data_with_values(db, data, owner=owner)
                found[key] = None if values[refs] is None else best_minimum({**spec, "data": values[refs]}, numel)
        return found[key]

    return best


@bp.get("/<sweep_id>/jobs")
def jobs_page(sweep_id: str):  # type: ignore[no-untyped-def]
    limit, cursor, sweep = _page_of(JOBS, sweep_id)
    svc = services()
    try:
        page, next_cursor = sweep_store.list_sweep_jobs(svc.db, sweep.id, limit, cursor)
    except (ValueError, UnicodeError):
        raise _cursor_error() from None
    return build(JobPage, {"jobs": [job_model(j) for j in page], "next_cursor": next_cursor})


@bp.post("/<sweep_id>/cancel")
def cancel(sweep_id: str):  # type: ignore[no-untyped-def]
    """Cancel every queued job of the sweep at once; running ones stop within about a second."""
    svc = services()
    sweep = sweep_store.get_sweep(svc.db, sweep_id, owner=caller().owner_filter)
    sweep_store.cancel_sweep(svc.db, sweep.id)
    return sweep_json(sweep, _counts(sweep.id)), 202
