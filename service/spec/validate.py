"""Admission checks for a job spec: everything a job must satisfy before it is stored.

``check_spec`` turns raw JSON into a ``CheckedSpec`` or raises ``SpecError`` naming the field
and what was expected. Nothing here runs the optimisation: the expression and its gradient are
traced on a meta tensor (shapes only, which also estimates their peak memory) and each optimiser
takes one step on a three-element scratch tensor. What one job may hold at once, the objective's
peak plus the optimiser's state, must fit in ``max_objective_bytes`` (a 413 otherwise).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationError

from service.config import Limits
from service.errors import ErrorCode
from service.expr import Expression, ExpressionError, check_on_shape, parse
from service.expr.parse import taken_name
from service.spec.catalog import CATALOG, CatalogObjective
from service.spec.error import SpecError
from service.spec.choices import CHOICE_NAMES
from service.spec.model import CATALOG_PARAM_BOUND, InitSpec, JobSpec, NamedObjective, PerJob
from service.spec.optimizers import (
    Choice,
    check_optimizer,
    check_schedule_length,
    check_scheduler,
)
from service.spec.values import MAX_MAGNITUDE, first_unstorable, in_range

_ITEMSIZE = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class CheckedSpec:
    """A spec that passed every check, with the pieces the engine needs already resolved."""

    spec: JobSpec
    expression: Expression
    shape: tuple[int, ...]
    x0: list[Any] | InitSpec
    optimizer: Choice
    scheduler: Choice | None
    catalog: CatalogObjective | None
    catalog_params: dict[str, float]
    data_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # of the data the objective reads

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def data(self) -> dict[str, list[Any] | InitSpec]:
        """The data tensors the objective reads, by name: nested lists, or generated ones."""
        return {name: self.spec.data[name] for name in self.data_shapes}

    @property
    def recorded_values(self) -> int:
        """The most history values this job may store (what it reserves of its owner's quota)."""
        return recorded_values(self.spec, self.numel)

    def as_json(self) -> dict[str, Any]:
        """The spec with its defaults filled in, as stored and returned by the API (without
        ``data`` when it has none, as specs were stored before data existed)."""
        return self.spec.model_dump(mode="json", exclude=None if self.spec.data else {"data"})


def _limit(field: str, message: str, status: int = 400) -> SpecError:
    return SpecError(field, message, code=ErrorCode.LIMIT_EXCEEDED, status=status)


def check_spec(data: Any, limits: Limits | None = None, trace: bool = True) -> CheckedSpec:
    """Validate raw JSON (a dict) as a v1 job spec. ``trace=False`` skips tracing the objective
    on x0's shape, for specs that already passed that check when they were submitted."""
    limits = limits or Limits()
    if not isinstance(data, dict):
        raise SpecError(None, "the job spec must be a JSON object")
    unstorable = first_unstorable(data)
    if unstorable is not None:
        raise SpecError(*unstorable)
    spec = _validated(data)
    catalog, params, text = _objective(spec)
    given = _data_shapes(spec, limits)
    x0, shape = _start(spec, catalog, limits, given)
    numel = math.prod(shape)
    _check_elements(numel, given, limits)
    try:
        expression = parse(text, spec.variable, limits, data=given)
    except ExpressionError as exc:
        raise SpecError("objective", str(exc), code=ErrorCode.INVALID_EXPRESSION) from None
    unread = sorted(set(given) - set(expression.data))
    if unread:
        raise SpecError(f"data.{unread[0]}", f"data tensor '{unread[0]}' is not read by the objective")
    data_shapes = {name: given[name] for name in expression.data}
    peak = _objective_peak(text, spec.variable, shape, spec.dtype, limits, data_shapes) if trace else 0
    _check_budgets(spec, numel, limits)
    optimizer, scheduler = _optimizer_and_scheduler(_choices_key(spec))
    if scheduler is not None:
        check_schedule_length(scheduler, spec.steps)
    _check_optimizer_memory(peak, optimizer, numel * _ITEMSIZE[spec.dtype], limits)
    return CheckedSpec(spec, expression, shape, x0, optimizer, scheduler, catalog, params, data_shapes)


def lane_checker(lead: CheckedSpec, limits: Limits | None = None) -> Callable[[Any], CheckedSpec]:
    """A check for the stored specs of jobs with ``lead``'s batch key (``service.spec.batchkey``):
    only the fields of ``PerJob`` (start, seed, name, tags) may differ from ``lead``'s, so only they
    are checked; the check raises SpecError if anything else differs, or the start has another shape."""
    limits = limits or Limits()
    per_job = frozenset(PerJob.model_fields)
    shared = {k: v for k, v in lead.as_json().items() if k not in per_job}

    def check(data: Any) -> CheckedSpec:
        if not isinstance(data, dict) or {k: v for k, v in data.items() if k not in per_job} != shared:
            spec = _validated(data)  # stored another way, perhaps: compare the specs themselves
            if spec.model_dump(exclude=set(per_job)) != lead.spec.model_dump(exclude=set(per_job)):
                raise SpecError(None, "this job differs from the batch it was claimed with in more than its start")
        else:
            try:
                own = PerJob.model_validate({k: v for k, v in data.items() if k in per_job})
            except ValidationError as exc:
                raise _from_pydantic(exc) from None
            spec = lead.spec.model_copy(update={name: getattr(own, name) for name in per_job})
        x0, shape = _start(spec, lead.catalog, limits, lead.data_shapes)
        if shape != lead.shape:
            raise SpecError("x0", f"x0 has shape {list(shape)}, not the batch's {list(lead.shape)}")
        return replace(lead, spec=spec, x0=x0)

    return check


def _validated(data: Any) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _from_pydantic(exc) from None


def recorded_values(spec: JobSpec, numel: int) -> int:
    """An upper bound on the values a job's history holds: rows 0, k, 2k, ... and the last, each
    with f, grad_norm, lr and the recorded tensors."""
    rows = spec.steps // spec.record.every + 2
    return rows * (3 + numel * (int(spec.record.x) + int(spec.record.grad)))


def _check_budgets(spec: JobSpec, numel: int, limits: Limits) -> None:
    """The configured ceilings on steps, recorded values, seconds and tags."""
    if spec.steps > limits.max_steps:
        raise _limit("steps", f"steps is {spec.steps}, over the limit of {limits.max_steps} (max_steps)")
    values = recorded_values(spec, numel)
    if values > limits.max_recorded_values:
        raise _limit(
            "record",
            f"this job would record about {values:,} values, over the limit of "
            f"{limits.max_recorded_values:,} (max_recorded_values); raise record.every or record less",
            status=413,
        )
    if spec.stop.max_seconds is not None and spec.stop.max_seconds > limits.max_seconds:
        raise _limit("stop.max_seconds", f"stop.max_seconds is over the limit of {limits.max_seconds:g} (max_seconds)")
    if len(spec.tags) > limits.max_tags or any(len(k) > 64 or len(v) > 256 for k, v in spec.tags.items()):
        raise _limit("tags", f"at most {limits.max_tags} tags, keys up to 64 and values up to 256 characters")


def _objective_peak(text: str, variable: str, shape: tuple[int, ...], dtype: str, limits: Limits,
                    data: dict[str, tuple[int, ...]]) -> int:
    """The objective's estimated peak bytes on x0's shape (and its data's); SpecError if it cannot
    run there or would need more than ``max_objective_bytes``."""
    traced = _trace(text, variable, shape, dtype, limits, tuple(sorted(data.items())))
    if isinstance(traced, str):
        raise SpecError("objective", traced, code=ErrorCode.INVALID_EXPRESSION)
    if traced > limits.max_objective_bytes:
        held = "x and the data" if data else "x"
        raise _limit("objective", f"the objective needs about {_size(traced)} at peak on x0's shape "
                     f"{list(shape)} ({dtype}: its intermediate tensors, gradient and {held}), over the limit of "
                     f"{_size(limits.max_objective_bytes)} (max_objective_bytes)", status=413)
    return traced


def _check_optimizer_memory(peak: int, optimizer: Choice, x_bytes: int, limits: Limits) -> None:
    """The optimiser's state (LBFGS: ``2 * history_size`` copies of x) comes on top of the
    objective's peak; together they must fit in ``max_objective_bytes``."""
    state = optimizer.state_vectors * x_bytes
    if peak + state <= limits.max_objective_bytes:
        return
    lbfgs = optimizer.name == "lbfgs"
    keeps = f"keeps {optimizer.state_vectors} copies of x" + (" (2 * history_size + 3)" if lbfgs else "")
    raise _limit("optimizer.history_size" if lbfgs else "optimizer",
                 f"optimizer '{optimizer.name}' {keeps}, {_size(state)}, which with the objective's "
                 f"{_size(peak)} is over the limit of {_size(limits.max_objective_bytes)} (max_objective_bytes)"
                 + ("; lower history_size" if lbfgs else ""), status=413)


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def _choices_key(spec: JobSpec) -> str:
    """The optimizer and scheduler objects as one JSON text, the key of their remembered check
    (each at most ``MAX_CHOICE_JSON`` characters, so the cache cannot hold megabytes per entry)."""
    optimizer = json.dumps(spec.optimizer.model_dump(mode="json"), sort_keys=True)
    scheduler = json.dumps(spec.scheduler.model_dump(mode="json") if spec.scheduler else None, sort_keys=True)
    return f"[{optimizer}, {scheduler}]"


# Admission is repeated for identical pieces (one spec submitted many times, the worker re-checking a stored
# spec), so the two checks that run torch are remembered; both depend only on their key.
@lru_cache(maxsize=1024)
def _trace(text: str, variable: str, shape: tuple[int, ...], dtype: str, limits: Limits,
           data: tuple[tuple[str, tuple[int, ...]], ...] = ()) -> int | str:
    """The objective's estimated peak bytes if it gives one real number, with a gradient, on
    x0's shape and dtype (and the data's shapes); else why not."""
    shapes = dict(data)
    try:
        return check_on_shape(parse(text, variable, limits, data=shapes), shape, getattr(torch, dtype), shapes)
    except ExpressionError as exc:
        return str(exc)


def forget_cached_checks() -> None:
    """Empty the remembered traces and optimiser checks (benchmarks time the checks themselves)."""
    _trace.cache_clear()
    _checked_choices.cache_clear()


@lru_cache(maxsize=256)
def _checked_choices(key: str) -> tuple[Choice, Choice | None] | SpecError:
    optimizer_raw, scheduler_raw = json.loads(key)
    try:
        optimizer = check_optimizer(optimizer_raw)
        scheduler = check_scheduler(scheduler_raw, optimizer) if scheduler_raw is not None else None
    except SpecError as exc:
        return exc
    return optimizer, scheduler


def _optimizer_and_scheduler(key: str) -> tuple[Choice, Choice | None]:
    out = _checked_choices(key)
    if isinstance(out, SpecError):  # a fresh error each time: a cached one would pile up tracebacks
        raise SpecError(out.field, out.message, code=out.code, status=out.status)
    return out


def _from_pydantic(exc: ValidationError) -> SpecError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    # Unions report one error per branch; the most specific path is the most useful.
    for err in errors:
        if len(err["loc"]) > len(first["loc"]):
            first = err
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("function-", "list[", "is-instance"))]
    loc = [p for p in loc if p not in ("str", "NamedObjective", "InitSpec", "int", "float", "none", "Strict")]
    if len(loc) > 1 and loc[0] in ("optimizer", "scheduler") and loc[1] in CHOICE_NAMES:
        del loc[1]  # the tag of the discriminated union
    kind = first["type"]
    if kind == "invalid_choice":  # optimizers.admitted's refusal, with its own field and code
        ctx = first.get("ctx", {})
        field = ".".join([*loc, ctx["at"]] if ctx.get("at") else loc) or None
        return SpecError(field, ctx["message"], code=ErrorCode(ctx["code"]))
    field = ".".join(loc) or None
    if kind == "extra_forbidden":
        message = f"unknown field '{field}'"
    elif kind == "missing":
        message = f"'{field}' is required"
    else:
        message = f"'{field}': {first['msg']}"
    if len(errors) > 1 and kind not in ("extra_forbidden", "missing"):
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return SpecError(field, message)


def _objective(spec: JobSpec) -> tuple[CatalogObjective | None, dict[str, float], str]:
    if isinstance(spec.objective, str):
        return None, {}, spec.objective
    named: NamedObjective = spec.objective
    entry = CATALOG.get(named.name)
    if entry is None:
        raise SpecError("objective.name", f"unknown objective '{named.name:.40}'; see GET /v1/objectives: "
                        + ", ".join(CATALOG))
    for key, value in named.params.items():
        if key not in entry.params:
            allowed = ", ".join(entry.params) or "none"
            raise SpecError(f"objective.params.{key}", f"'{named.name}' has no parameter '{key:.40}' (allowed: {allowed})")
        if not math.isfinite(value) or abs(value) > CATALOG_PARAM_BOUND:
            raise SpecError(f"objective.params.{key}",
                            f"parameter '{key}' must be a finite number within ±{CATALOG_PARAM_BOUND:,.0f}")
    if spec.variable != "x":
        raise SpecError("variable", "catalog objectives are written in 'x'; leave 'variable' out")
    missing = [name for name in entry.data if name not in spec.data]
    if missing:
        raise SpecError(f"data.{missing[0]}", f"'{named.name}' reads the data tensors {', '.join(entry.data)}; "
                        f"give '{missing[0]}' in 'data'")
    return entry, dict(named.params), entry.expression(named.params)


def _start(spec: JobSpec, catalog: CatalogObjective | None, limits: Limits,
           data: dict[str, tuple[int, ...]]) -> tuple[list[Any] | InitSpec, tuple[int, ...]]:
    x0 = spec.x0
    if x0 is None:
        if catalog is None:
            raise SpecError("x0", "'x0' is required for an expression objective")
        x0 = catalog.start(data)
    if isinstance(x0, InitSpec):
        shape = _generated_shape(x0, "x0", limits)
    else:
        shape = _nested_shape(x0, limits)
    if catalog is not None:
        n = math.prod(shape)
        if n < catalog.min_elements or (catalog.max_elements is not None and n > catalog.max_elements):
            hi = catalog.max_elements if catalog.max_elements is not None else "any number of"
            raise SpecError("x0", f"'{catalog.name}' takes {catalog.min_elements} to {hi} elements, x0 has {n}")
    return x0, shape


def _generated_shape(init: InitSpec, field: str, limits: Limits) -> tuple[int, ...]:
    """The shape of a generated tensor (x0 or data), after checking its distribution."""
    if any(d < 1 for d in init.shape):
        raise SpecError(f"{field}.shape", f"every dimension of {field}.shape must be at least 1")
    if math.prod(init.shape) > limits.max_elements:
        raise _limit(f"{field}.shape", f"{field} would have {math.prod(init.shape):,} elements, over the limit of "
                     f"{limits.max_elements:,} (max_elements)", status=413)
    if init.init == "uniform" and not init.low < init.high:
        raise SpecError(f"{field}.high", f"{field}.high must be greater than {field}.low")
    if init.init == "normal" and not init.std > 0:
        raise SpecError(f"{field}.std", f"{field}.std must be positive")
    return tuple(init.shape)


def _data_shapes(spec: JobSpec, limits: Limits) -> dict[str, tuple[int, ...]]:
    """The shape of each data tensor, after checking its name and its values."""
    shapes = {}
    for name, entry in spec.data.items():
        field = f"data.{name}"
        taken = "the objective's variable" if name == spec.variable else taken_name(name)
        if taken:
            if name != spec.variable:
                taken += " of the objective language"
            raise SpecError(field, f"the data name '{name}' is {taken}; choose another")
        shapes[name] = (_generated_shape(entry, field, limits) if isinstance(entry, InitSpec)
                        else _nested_shape(entry, limits, field))
    return shapes


def _check_elements(numel: int, data: dict[str, tuple[int, ...]], limits: Limits) -> None:
    """x and the data together count against ``max_elements``."""
    total = numel + sum(math.prod(shape) for shape in data.values())
    if data and total > limits.max_elements:
        raise _limit("data", f"x0 and the data tensors hold {total:,} elements together, over the limit of "
                     f"{limits.max_elements:,} (max_elements)", status=413)


def _plain_numbers_in_range(values: list[Any]) -> bool:
    """Whether every value is an int or a float strictly within ``MAX_MAGNITUDE`` (so finite),
    checked in C: a million-number x0 held the API's GIL for a fifth of a second value by value.
    False says only that the value-by-value check must look (bool, str, NaN, a huge int)."""
    if not set(map(type, values)) <= {int, float}:
        return False
    try:
        magnitudes = np.abs(np.asarray(values, dtype=np.float64))
    except OverflowError:  # an int beyond float64
        return False
    return bool((magnitudes < MAX_MAGNITUDE).all())  # NaN compares false


def _nested_shape(x0: list[Any], limits: Limits, field: str = "x0") -> tuple[int, ...]:
    """Shape of a rectangular nested list of finite numbers (``field``: what it is, for errors);
    SpecError otherwise."""
    shape: list[int] = []
    level: list[Any] = [x0]
    while level and isinstance(level[0], list):
        width = len(level[0])
        if width == 0:
            raise SpecError(field, f"{field} has an empty list; every dimension needs at least one number")
        for item in level:
            if not isinstance(item, list) or len(item) != width:
                raise SpecError(field, f"{field} is not rectangular: every list at depth {len(shape) + 1} must have {width} items")
        shape.append(width)
        if len(shape) > 8:
            raise SpecError(field, f"{field} has more than 8 dimensions")
        total = math.prod(shape)
        if total > limits.max_elements:
            raise _limit(field, f"{field} has over {limits.max_elements:,} elements (max_elements)", status=413)
        level = [v for item in level for v in item]
    if _plain_numbers_in_range(level):
        return tuple(shape)
    for value in level:  # the slow way, to name the first value at fault
        if isinstance(value, list) or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(field, f"{field} must hold only numbers in a rectangular nested list, found {value!r:.40}")
        if not in_range(value):
            raise SpecError(field, f"{field} must hold finite numbers within ±{MAX_MAGNITUDE:g}, found {value!r:.40}")
    return tuple(shape)
