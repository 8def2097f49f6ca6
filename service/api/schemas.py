"""The API's response bodies as pydantic models: the handlers build their JSON through them, and
``/openapi.json`` describes every response with their generated JSON Schemas (``service.api.openapi``).

A model's schema is what the service answers, so a response and its description cannot drift
apart. Non-finite floats leave the service as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (``Float``: validation turns a non-finite float into its string). ``spec`` and
other free-form parts stay ``Any``: the request schema (``JobSpec``) describes what a spec holds.

A handler builds its body with ``build(Model, data)``: ``data`` validated, then dumped as JSON. A
key a model does not name is an error (``extra="forbid"``: the tests find a handler and its model
that drifted apart), except in a job's result, whose unnamed keys are kept as stored. The document
does not promise that no key will be added (``components.response_schemas``). A model is named
for the body it describes with a ``View`` suffix where the store or engine has a class of that name
(``JobView`` is what a client reads of a job; ``service.store.models.Job`` is its row).
"""
from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SkipValidation
from typing_extensions import TypeAliasType

from service.errors import ErrorCode
from service.status import JobStatus, StopReason

NonFinite = Literal["NaN", "Infinity", "-Infinity"]


def _named(value: float | str) -> float | str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


# A number; non-finite values are their strings. A named type: one component, Float, in the document.
Float = TypeAliasType("Float", Annotated[
    float | NonFinite, AfterValidator(_named),
    Field(description="A number; non-finite values are the strings NaN, Infinity and -Infinity")])

Uuid = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
# A time: a datetime, written as ISO 8601 with Z for UTC (as ``serialize.iso`` writes it); TimeText
# is one already written so (a job's progress is stored as JSON).
Time = datetime
TimeText = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Count = Annotated[int, Field(ge=0)]


class Model(BaseModel):
    """Base of every response model: fields in the order they are answered, none unnamed."""

    # A non-finite float in a free-form part (Any) stays a float here, and the app's JSON writer
    # writes it as its string (pydantic's default would make it null).
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    def dump(self) -> dict[str, Any]:
        """The JSON body."""
        return self.model_dump(mode="json")


M = TypeVar("M", bound=Model)


def build(model: type[M], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` validated by ``model`` and dumped as JSON: a handler's body, through its model."""
    return model.model_validate(data).dump()


# --- errors -------------------------------------------------------------------------------------

class ErrorBody(Model):
    code: str = Field(description="One of " + ", ".join(ErrorCode) + ", or an HTTP error's name "
                                  "(method_not_allowed, not_found, ...)")
    message: str
    field: str | None = Field(description="The field, parameter or header at fault")


class Error(Model):
    """Every error the API answers with."""

    error: ErrorBody


# --- jobs ---------------------------------------------------------------------------------------

class ProgressView(Model):
    """Where a job stands: the last step evaluated, the steps it may take, f and the gradient's norm there."""

    step: Count = Field(description="The last step evaluated")
    steps: Count = Field(description="The steps the job may take")
    f: Float
    grad_norm: Float | None
    updated_at: TimeText | None


def _absent(value: Any) -> bool:
    return value is None


class TensorSummary(Model):
    """A tensor too big for a job document (over DESCENT_INLINE_ELEMENTS elements): what it is, and
    where its values are (``href``: .npy by default, ``?format=json`` for JSON)."""

    shape: list[Count]
    dtype: Literal["float64"]
    size: Count = Field(description="Its number of elements")
    sha256: str = Field(description="SHA-256 of its shape (as JSON), a newline, and its float64 little-endian "
                                    "values in C order")
    norm: Float = Field(description="Euclidean norm")
    min: Float | None
    max: Float | None
    href: str


class ResultView(Model):
    """A finished run: where it ended and why. Keys not named here are kept as stored."""

    model_config = ConfigDict(extra="allow")

    x: TensorSummary | list[Any] = Field(description="The final x, in x0's shape; a TensorSummary (its shape, digest, norm, min, max "
                               "and an href to fetch it, as .npy or JSON) when it has more than "
                               "DESCENT_INLINE_ELEMENTS elements, unless ?include=x")
    f: Float = Field(description="f at the final x")
    grad_norm: Float = Field(description="The gradient's norm at the final x")
    steps: Count = Field(description="Steps actually done")
    stop_reason: StopReason = Field(description="Why the run ended")
    graph: list[str] = Field(description="The backward graph's nodes, last op first")
    device: str = Field(description="Where it ran (cpu, cuda:0, ...)")
    device_name: str | None = Field(default=None, exclude_if=_absent,
                                    description="The device's name: the CUDA device's, or the processor's")
    seconds: float = Field(ge=0, description="Seconds the run took")
    # Present only when known: a missing one is left out of the answer, not written as null.
    grad: TensorSummary | list[Any] | None = Field(default=None, exclude_if=_absent,
                      description="The final gradient, in x0's shape (steps 0, or record.grad); a "
                                  "TensorSummary when big, as x")
    distance_to_minimum: Float | None = Field(default=None, exclude_if=_absent,
                                              description="To the nearest known minimum (catalog objectives "
                                                          "that have one)")
    worker: str | None = Field(default=None, exclude_if=_absent, description="The worker that ran it")


class TensorValues(Model):
    """A job's x, grad or x0 as JSON (``GET /v1/jobs/ID/x?format=json``)."""

    name: Literal["x", "grad", "x0"]
    dtype: Literal["float64"]
    shape: list[Count]
    values: Any = Field(description="Nested lists in the tensor's shape (non-finite numbers as the strings NaN, "
                                    "Infinity and -Infinity)")


class JobSweep(Model):
    """The sweep a job belongs to."""

    id: Uuid
    index: Count = Field(description="The job's place in the sweep")
    href: str


class JobLinks(Model):
    self: str
    history: str
    events: str


class JobView(Model):
    """A job as GET /v1/jobs/<id> answers it."""

    id: Uuid
    owner: str = Field(description="Who submitted it (the token's owner; 'local' with auth off)")
    status: JobStatus
    name: str | None
    tags: dict[str, str]
    # As stored (checked when it was submitted): not copied by validation, only written out.
    spec: SkipValidation[dict[str, Any]] = Field(title="StoredSpec", description="The spec as submitted, with its defaults filled in "
                                                          "(a JobSpec)")
    queue: Literal["cpu", "gpu"]
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    worker: str | None
    attempts: Count
    cancel_requested: bool
    error: str | None = Field(description="Why it failed, in plain words")
    waiting: str | None = Field(description="Why a queued job waits, when it waits for more than its turn: "
                                            "'waiting for a GPU worker' (a gpu job while no GPU worker heartbeats)")
    worker_lost_at: Time | None = Field(description="A running job whose worker stopped heartbeating: since when "
                                                    "the worker counts as lost")
    reclaim_at: Time | None = Field(description="With worker_lost_at: when the job's lease lapses and it is "
                                                "queued again")
    result: ResultView | None
    progress: ProgressView | None = Field(description="Where the job stands: null before its first history chunk")
    history_dropped_at: Time | None = Field(description="When the history retention "
                                                        "(DESCENT_HISTORY_RETENTION_SECONDS) dropped this finished "
                                                        "job's history; null while it is kept")
    sweep: JobSweep | None = Field(description="The sweep it belongs to; null for a job submitted alone")
    links: JobLinks

    def dump(self) -> dict[str, Any]:
        """The JSON body; the spec, a free-form object as stored, goes in as it is rather than
        copied value by value (half the time of a job's dump; the app's JSON writer writes it)."""
        out = self.__pydantic_serializer__.to_python(self, mode="json", exclude=_SPEC)
        return {key: out[key] for key in _BEFORE_SPEC} | {"spec": self.spec} | {
            key: out[key] for key in _AFTER_SPEC}


_SPEC = {"spec"}
_BEFORE_SPEC = tuple(JobView.model_fields)[:tuple(JobView.model_fields).index("spec")]
_AFTER_SPEC = tuple(JobView.model_fields)[tuple(JobView.model_fields).index("spec") + 1:]


class JobPage(Model):
    jobs: list[JobView]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")

    def dump(self) -> dict[str, Any]:
        """The JSON body, each job dumped as ``JobView.dump`` does (its spec as stored, not copied value
        by value): a page of 1,000 jobs built through this model costs what a dict of their bodies does.
        The jobs are ``JobView`` instances already (``serialize.job_model``), which validation takes as
        they are."""
        return {"jobs": [job.dump() for job in self.jobs], "next_cursor": self.next_cursor}


# --- history (streamed as text by service.api.history; these describe it) ------------------------

class HistoryRowView(Model):
    """One recorded step; the fields asked for (``?fields=``), step always."""

    step: Count
    f: Float = Field(default=None, json_schema_extra=lambda s: s.pop("default"))
    grad_norm: Float = Field(default=None, json_schema_extra=lambda s: s.pop("default"))
    lr: Float = Field(default=None, json_schema_extra=lambda s: s.pop("default"))
    x: Any = Field(default=None, description="x at this step, in x0's shape",
                   json_schema_extra=lambda s: s.pop("default"))
    grad: Any = Field(default=None, description="the gradient at this step, in x0's shape",
                      json_schema_extra=lambda s: s.pop("default"))


class HistoryPage(Model):
    rows: list[HistoryRowView]
    next_start: Count | None = Field(description="Pass as ?start= for the next page; null on the last")


# --- surface ------------------------------------------------------------------------------------

class Surface(Model):
    """f on an n x n grid over two flat elements of x."""

    coords: list[Count] = Field(min_length=2, max_length=2, description="The two flat indices of x on the axes")
    x: list[float]
    y: list[float]
    f: list[list[Float]] = Field(description="f[r][c] is f at (x[c], y[r]): rows follow y")


# --- catalogs -----------------------------------------------------------------------------------

class Elements(Model):
    min: Count
    max: Count | None = Field(description="null: any number")


class Minimum(Model):
    x: list[float]
    f: Float


class Objective(Model):
    """A catalog objective: its formula, parameters with defaults, default start and known minima."""

    name: str
    formula: str
    description: str
    params: dict[str, float]
    default_start: Any = Field(description="x0 when a spec leaves it out: a nested list of numbers")
    elements: Elements
    minima: list[Minimum]
    data: list[str] = Field(description="The data tensors a spec must give in 'data' (objectives of data), else []")


class ObjectiveCatalog(Model):
    objectives: list[Objective]


class Optimizer(Model):
    """An allowed optimiser or scheduler: the torch class, its keyword arguments and their defaults."""

    name: str
    torch: str
    arguments: dict[str, Any] = Field(description="Keyword arguments and their defaults (null: none)")
    required: list[str]


class OptimizerCatalog(Model):
    optimizers: list[Optimizer]
    schedulers: list[Optimizer]


# --- sweeps -------------------------------------------------------------------------------------

class Counts(Model):
    """Jobs of the sweep in each status."""

    queued: Count
    running: Count
    succeeded: Count
    failed: Count
    cancelled: Count


class SweepLinks(Model):
    self: str
    jobs: str
    cancel: str


class SweepView(Model):
    id: Uuid
    owner: str
    name: str | None
    tags: dict[str, str]
    created_at: Time
    jobs: int = Field(ge=1)
    counts: Counts
    tolerance: float = Field(ge=0)
    grid: dict[str, list[Any]]
    starts: dict[str, Any] = Field(description="The random starts' settings, {list: n} or {base: true}")
    base: dict[str, Any]
    diverged: Count = Field(description="Jobs that succeeded by stopping on divergence (or with a "
                                                   "non-finite final f): counted in counts.succeeded too")
    links: SweepLinks


class SweepSummaryItem(Model):
    id: Uuid
    index: Count = Field(description="The job's place in the sweep")
    grid: dict[str, Any] = Field(description="The value this job got for each grid key")
    start: Count = Field(description="Which start it ran from")
    status: JobStatus
    f: Float | None = Field(description="Final f (null until it finishes)")
    stop_reason: StopReason | None
    distance_to_minimum: Float | None
    steps_to_tolerance: Count | None = Field(description="First recorded step with f within the sweep's "
                                                         "tolerance of the best known minimum; null if none")


class SweepDetail(SweepView):
    """A sweep and a page of its summary."""

    sort: Literal["created", "f"]
    summary: list[SweepSummaryItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= (with the same sort) for the next page; "
                                                "null on the last")


class SweepPage(Model):
    """Sweeps, newest first."""

    sweeps: list[SweepView]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


class SweepGrid(Model):
    """Final f of every job of a sweep over two of its grid keys: cells[i][j] is over the jobs whose
    value of the rows key is rows[i] and of the cols key cols[j]."""

    rows_key: str | None = Field(description="The grid key down the rows (null: one row of every job)")
    cols_key: str | None = Field(description="The grid key across the columns (null: one column)")
    stat: Literal["min", "median", "mean"]
    rows: list[Any] = Field(description="The rows key's values, in the grid's order ([null] without one)")
    cols: list[Any] = Field(description="The cols key's values, in the grid's order ([null] without one)")
    cells: list[list[Float | None]] = Field(description="stat of the finite final f of the cell's succeeded jobs "
                                                        "(diverged ones left out); null when it has none")
    counts: list[list[Count]] = Field(description="The cell's jobs, whatever their status: they sum to the "
                                                  "sweep's jobs")
    finite: list[list[Count]] = Field(description="The jobs the cell's stat is over")
    diverged: list[list[Count]] = Field(description="The cell's jobs that succeeded by stopping on divergence, "
                                                    "or with a non-finite final f")


# --- health -------------------------------------------------------------------------------------

class Health(Model):
    status: Literal["ok"]
    waiting: Count = Field(description="Requests waiting or streaming now")
    max_waiters: Count = Field(description="DESCENT_MAX_WAITERS")


class Readiness(Model):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="database, broker: ok, or down: the reason")


# --- workers ------------------------------------------------------------------------------------

class WorkerView(Model):
    """A worker process of the fleet, alive, lost or stopped."""

    id: str = Field(description="host:pid, the same string as a job's worker")
    host: str
    pid: int
    queues: list[str]
    device: Literal["cpu", "gpu"]
    device_name: str | None = Field(description="The CUDA device's name, or the processor's")
    cuda_memory: int | None = Field(description="Bytes of the CUDA device (GPU workers)")
    versions: dict[str, str]
    started_at: TimeText
    last_heartbeat: TimeText
    state: Literal["alive", "lost", "stopped"]
    lost_since: TimeText | None
    stopped_at: TimeText | None = Field(description="A worker that shut down cleanly: when")
    current_job: str | None = Field(description="The job it runs now (the first of a batch)")
    jobs_done: Count


class WorkerList(Model):
    workers: list[WorkerView]


class RemovedCounts(Model):
    jobs: Count = Field(description="Jobs deleted")
    history_rows: Count = Field(description="History rows deleted")
    data_tensors: Count = Field(description="Data tensors deleted: the owner's own copies that no other job of the owner reads")
    sweeps: Count = Field(description="Sweeps deleted")


class Deleted(Model):
    """What a DELETE removed."""

    id: Uuid = Field(description="The job's or sweep's id")
    deleted: Literal["job", "sweep"]
    removed: RemovedCounts


# Every body the API answers with, as the document's components (with the models they nest:
# ProgressView, ResultView, HistoryRowView, SweepSummaryItem, ...).
RESPONSES: tuple[type[Model], ...] = (
    Error, JobView, JobPage, HistoryPage, Surface, ObjectiveCatalog, OptimizerCatalog, SweepView, SweepDetail, SweepPage,
    SweepGrid, Health, Readiness, WorkerList, Deleted, TensorValues,
)
