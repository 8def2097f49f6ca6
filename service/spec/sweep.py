"""Sweeps: one base job spec, a grid of values over its dotted keys and a set of starts, expanded
into many complete job specs.

``plan_sweep`` checks a request's structure through its model (``service.spec.sweep_request``,
which ``/openapi.json`` publishes) and counts its jobs (the product of the grid's lists times the
starts) against ``limits.max_sweep_jobs`` before anything is expanded. ``expand`` then
runs ``check_spec`` once per distinct combination of grid values, with one representative x0
(every start of a sweep has the same shape, and its values are finite numbers within the spec's
bound, so they cannot change the verdict), and hands back, per combination, the checked spec as
stored and the explicit x0 of each of its jobs. Job ``i`` of a sweep is combination
``i // n_starts`` (grid keys in order, the last varying fastest) with start ``i % n_starts``.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from service.config import Limits
from service.errors import ErrorCode
from service.spec.catalog import CATALOG
from service.spec.error import SpecError
from service.spec.model import InitSpec, JobSpec
from service.spec.start import data_tensor, start_tensor
from service.spec.sweep_request import (  # noqa: F401 - re-exported for callers
    ALLOWED_GRID_KEYS,
    DEFAULT_TOLERANCE,
    MAX_GRID_KEYS,
    REQUEST_FIELDS,
    START_FIELDS,
    RandomStarts,
    parse_request,
)
from service.spec.validate import CheckedSpec, _nested_shape, check_spec
from service.spec.values import MAX_MAGNITUDE, first_unstorable

# Numbers of x0 a sweep may store over all its jobs (100,000 jobs of 20 parameters): every job's
# spec holds its own explicit start.
MAX_START_VALUES = 2_000_000
# Combinations of grid values one sweep may have (the product of its lists' lengths): each is
# checked as a job spec (about 0.2 ms for a small objective, more for a long expression), so this
# bounds the checking one request may cause; starts make the jobs beyond it.
MAX_GRID_COMBINATIONS = 10_000
# Grid keys that may change what a job records (``validate.recorded_values``): its rows (steps
# over record.every) and the width of a row (x's elements, whether x and grad are recorded).
_ROWS_KEYS = frozenset({"steps", "record", "record.every"})
_WIDTH_KEYS = frozenset({"record", "record.x", "record.grad"})


@dataclass(frozen=True)
class SweepPlan:
    """A sweep request whose structure passed: nothing expanded yet."""

    base: dict[str, Any]
    grid: list[tuple[str, list[Any]]]
    starts: dict[str, Any] | None  # the random starts' description, with its defaults
    start_list: list[Any] | None  # explicit x0 values
    n_starts: int
    tolerance: float
    name: str | None
    tags: dict[str, str]
    jobs: int

    def stored_starts(self) -> dict[str, Any]:
        """What the sweep row keeps of its starts (an explicit list is in its jobs' specs)."""
        if self.starts is not None:
            return dict(self.starts)
        if self.start_list is not None:
            return {"list": len(self.start_list)}
        return {"base": True}

    def stored_base(self) -> dict[str, Any]:
        """The base as kept with the sweep: without x0 where explicit starts replaced it."""
        if self.start_list is not None:
            return {k: v for k, v in self.base.items() if k != "x0"}
        return self.base


@dataclass(frozen=True)
class Variant:
    """One distinct combination of grid values: its checked spec (x0 aside) and its jobs' starts."""

    values: dict[str, Any]
    checked: CheckedSpec
    spec: dict[str, Any]  # as stored, x0 left to each job
    starts: list[Any]  # one explicit x0 per job


def _bad(field: str, message: str) -> SpecError:
    return SpecError(field, message)


def plan_sweep(data: Any, limits: Limits) -> SweepPlan:
    """The request validated by its model (``SweepRequest``: SpecError naming the field at fault),
    and its job count against ``limits.max_sweep_jobs`` (a 413 naming DESCENT_MAX_SWEEP_JOBS)."""
    request = parse_request(data, limits.max_tags)
    grid = list(request.grid.items())
    start_list, starts = None, None
    if isinstance(request.starts, RandomStarts):
        starts = request.starts.model_dump()
        n_starts = starts["count"]
    elif request.starts is not None:
        start_list, n_starts = request.starts, len(request.starts)
    else:
        n_starts = 1
    combinations = math.prod(len(values) for _, values in grid)
    jobs = combinations * n_starts
    if jobs > limits.max_sweep_jobs:
        # The count itself only while it is short: a starts.count may have thousands of digits.
        count = f"{jobs:,}" if jobs < 10**15 else "over 10^15"
        raise SpecError("grid", f"this sweep would make {count} jobs (the grid's product times its starts), over "
                        f"the limit of {limits.max_sweep_jobs:,} (DESCENT_MAX_SWEEP_JOBS)",
                        code=ErrorCode.LIMIT_EXCEEDED, status=413)
    if combinations > MAX_GRID_COMBINATIONS:
        raise SpecError("grid", f"this sweep's grid has {combinations:,} combinations of values (the product of "
                        f"its lists' lengths), over the limit of {MAX_GRID_COMBINATIONS:,}: each is checked as a "
                        "job spec; vary fewer values (starts make more jobs of each combination)",
                        code=ErrorCode.LIMIT_EXCEEDED, status=413)
    return SweepPlan(base=request.base, grid=grid, starts=starts, start_list=start_list, n_starts=n_starts,
                     tolerance=float(request.tolerance), name=request.name, tags=dict(request.tags), jobs=jobs)


def check_storable(plan: SweepPlan) -> None:
    """What the sweep row keeps of the request (its base and grid) must be storable as it is,
    including values a grid value overrides and no job spec therefore checks: text with no NUL or
    lone surrogate, nesting within bounds, every number finite (JSON has no NaN or infinity)."""
    kept = {"base": plan.stored_base(), "grid": dict(plan.grid)}
    unstorable = first_unstorable(kept)
    if unstorable is not None:
        raise SpecError(*unstorable)
    stack: list[tuple[str, Any]] = [("base", kept["base"]), ("grid", kept["grid"])]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}", v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path, v) for v in node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise _bad(path, f"'{path}' must hold finite numbers, not {node!r}")


# --- expansion ----------------------------------------------------------------------------------

def _copy(node: Any) -> Any:
    """A copy of a spec's objects (lists are shared: nothing below writes into one)."""
    return {k: _copy(v) for k, v in node.items()} if isinstance(node, dict) else node


def _with_value(spec: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = spec
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise _bad(f"grid.{key}", f"grid '{key}' needs base.{'.'.join(parts[:i + 1])} to be an object")
        node = child
    node[parts[-1]] = _copy(value)  # a later, deeper grid key writes into it: never into the grid's own value


def _blame(exc: SpecError, plan: SweepPlan, values: dict[str, Any]) -> SpecError:
    """The refusal of one combination, naming the grid key at fault (or the base, or the starts)."""
    field = exc.field
    keys = [k for k, _ in plan.grid]
    if field is not None:
        for key in sorted(keys, key=lambda k: (k != field, -len(k))):
            if field == key or field.startswith(key + ".") or key.startswith(field + "."):
                return SpecError(f"grid.{key}", f"grid '{key}' = {json.dumps(values[key])[:80]}: {exc.message}",
                                 code=exc.code, status=exc.status)
        if (field == "x0" or field.startswith("x0.")) and plan.start_list is not None:
            return SpecError("starts", f"starts: {exc.message}", code=exc.code, status=exc.status)
    where = f" (with grid values {json.dumps(values)[:200]})" if values else ""
    return SpecError(f"base.{field}" if field else "base", f"base{where}: {exc.message}", code=exc.code, status=exc.status)


def _check(data: dict[str, Any], plan: SweepPlan, values: dict[str, Any], limits: Limits) -> CheckedSpec:
    try:
        return check_spec(data, limits)
    except SpecError as exc:
        raise _blame(exc, plan, values) from None


def _materialise(checked: CheckedSpec) -> list[Any]:
    """The x0 a job would start from, as a nested list: for a generated start, the very draw the
    engine makes (``service.spec.start``)."""
    if not isinstance(checked.x0, InitSpec):
        return checked.x0
    out = start_tensor(checked)
    if not bool(out.abs().max() <= MAX_MAGNITUDE):
        raise _bad("base.x0", f"base.x0 draws numbers beyond ±{MAX_MAGNITUDE:g}")
    return out.tolist()


def _random(starts: dict[str, Any], shape: tuple[int, ...]) -> list[Any]:
    """``count`` starts of ``shape``, drawn by numpy's ``default_rng(seed)`` (the same for every
    combination of a sweep, so start i means the same point for every optimiser)."""
    rng = np.random.default_rng(starts["seed"])
    size = (starts["count"], *shape)
    if starts["init"] == "uniform":
        drawn = rng.uniform(float(starts["low"]), float(starts["high"]), size=size)
    else:
        drawn = rng.normal(float(starts["mean"]), float(starts["std"]), size=size)
    if drawn.size and not bool(np.abs(drawn).max() <= MAX_MAGNITUDE):
        raise _bad("starts.std", f"starts would draw numbers beyond ±{MAX_MAGNITUDE:g}; lower starts.std or move starts.mean")
    return drawn.tolist()


def _start_list_shape(plan: SweepPlan, limits: Limits) -> tuple[int, ...]:
    """Every explicit start: a rectangular nested list of finite numbers, all of one shape."""
    assert plan.start_list is not None
    shape: tuple[int, ...] | None = None
    for i, x0 in enumerate(plan.start_list):
        if not isinstance(x0, list):
            raise _bad(f"starts.{i}", "every start must be a nested list of numbers (x0)")
        try:
            this = _nested_shape(x0, limits)
        except SpecError as exc:
            raise SpecError(f"starts.{i}", f"start {i}: {exc.message}", code=exc.code, status=exc.status) from None
        if shape is None:
            shape = this
        elif this != shape:
            raise _bad(f"starts.{i}", f"start {i} has shape {list(this)}, start 0 has {list(shape)}; all must match")
    assert shape is not None
    return shape


def _prepared(plan: SweepPlan, limits: Limits) -> dict[str, Any]:
    """The base every combination is written into: the default optimiser where the grid sets its
    arguments, and the first explicit start as its x0 (every start checked for its shape)."""
    base = _copy(plan.base)
    if "optimizer" not in base and any(k.startswith("optimizer.") for k, _ in plan.grid):
        base["optimizer"] = JobSpec.model_fields["optimizer"].get_default(call_default_factory=True)
    if plan.start_list is not None:
        _start_list_shape(plan, limits)
        base["x0"] = plan.start_list[0]
    return base


@dataclass(frozen=True)
class Admission:
    """What a sweep will cost, known before it is expanded: its jobs, the history values they will
    reserve (exact, or a lower bound where the grid varies what a job records) and the numbers of
    x0 they will hold (exact, or a lower bound where the grid may change x0's shape)."""

    jobs: int
    values: int
    values_exact: bool
    start_values: int


def admit(plan: SweepPlan, limits: Limits) -> Admission:
    """The sweep's cost from its sizes and its first combination alone (one spec check, as
    ``expand`` makes first: the same refusal where that combination is bad), and a 413 past
    MAX_START_VALUES numbers of x0, before anything is expanded. The caller checks the quotas
    against it (``service.store.quotas.check_ahead``) before calling ``expand``."""
    base = _prepared(plan, limits)
    first = {key: values[0] for key, values in plan.grid}
    data = _copy(base)
    for key, value in first.items():
        _with_value(data, key, value)
    checked = _check(data, plan, first, limits)
    keys = {key for key, _ in plan.grid}
    shaped = any(key == "objective" or key.startswith("objective.") for key in keys)
    rows = checked.spec.steps // checked.spec.record.every + 2
    width = 3 + checked.numel * (int(checked.spec.record.x) + int(checked.spec.record.grad))
    exact = not (keys & (_ROWS_KEYS | _WIDTH_KEYS)) and not shaped
    per_job = rows * width if exact else ((2 if keys & _ROWS_KEYS else rows) *
                                          (3 if keys & _WIDTH_KEYS or shaped else width))
    start_values = plan.jobs * (1 if shaped else checked.numel)
    _count_values(start_values)
    return Admission(jobs=plan.jobs, values=plan.jobs * per_job, values_exact=exact, start_values=start_values)


def expand(plan: SweepPlan, limits: Limits) -> list[Variant]:
    """Check every distinct combination of grid values once; SpecError (naming the grid key, the
    base or the starts) for the first that fails. At most MAX_START_VALUES numbers of x0 in all."""
    base = _prepared(plan, limits)
    variants: list[Variant] = []
    seen: dict[str, tuple[CheckedSpec, dict[str, Any], list[Any]]] = {}
    drawn: dict[tuple[int, ...], list[Any]] = {}
    values_in_all = 0
    keys = [k for k, _ in plan.grid]
    for combo in itertools.product(*(values for _, values in plan.grid)):
        values = dict(zip(keys, combo))
        key = json.dumps(combo, sort_keys=True)
        if key not in seen:
            data = _copy(base)
            for k, v in values.items():
                _with_value(data, k, v)
            checked = _check(data, plan, values, limits)
            _count_values(values_in_all + checked.numel * plan.n_starts)
            spec = checked.as_json()
            if plan.start_list is not None:
                starts = plan.start_list
            elif plan.starts is not None:
                if checked.shape not in drawn:
                    drawn[checked.shape] = _random(plan.starts, checked.shape)
                starts = drawn[checked.shape]
            else:
                starts = [_materialise(checked)]
            seen[key] = (checked, spec, starts)
        checked, spec, starts = seen[key]
        values_in_all += checked.numel * plan.n_starts
        _count_values(values_in_all)
        variants.append(Variant(values, checked, spec, starts))
    _check_replaced(plan, base, limits)
    return variants


def _says(base: dict[str, Any], key: str) -> bool:
    """Whether the base gives a value at dotted ``key`` (or something other than an object on the way)."""
    node: Any = base
    for part in key.split("."):
        if not isinstance(node, dict):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def _check_replaced(plan: SweepPlan, base: dict[str, Any], limits: Limits) -> None:
    """What a grid key or the starts replace in the base is checked all the same: a base is a job
    spec in everything it says (the document describes it with the job spec's own schema, every key
    optional), so ``"steps": -1`` is refused even where the grid sets steps. Done once, and only when
    the base says something the grid or explicit starts replace: the base (``base``: as ``expand``
    prepared it) with the grid's first values where it says nothing, and x0 on its own."""
    replaced = [key for key, _ in plan.grid if _says(plan.base, key)]
    if replaced:
        data = _copy(base)
        for key, values in plan.grid:
            if not _says(data, key):
                _with_value(data, key, values[0])
        try:
            check_spec(data, limits)
        except SpecError as exc:
            field = f"base.{exc.field}" if exc.field else "base"
            raise SpecError(field, f"base: {exc.message} (the base must be a valid job spec in all it says, "
                            f"even where the grid replaces it: {', '.join(replaced)})",
                            code=exc.code, status=exc.status) from None
    x0 = plan.base.get("x0")
    if plan.start_list is not None and x0 is not None:
        try:  # any shape will do for this objective: x0 alone is checked
            check_spec({"objective": "x.sum()", "x0": x0, "steps": 0}, limits)
        except SpecError as exc:
            field = f"base.{exc.field}" if exc.field else "base.x0"
            raise SpecError(field, f"base.x0, which the starts replace, must still be an x0: {exc.message}",
                            code=exc.code, status=exc.status) from None


def _count_values(total: int) -> None:
    if total > MAX_START_VALUES:
        raise SpecError("starts", f"this sweep's jobs would hold over {MAX_START_VALUES:,} numbers of x0 in all "
                        "(jobs times x0's elements); sweep fewer or smaller starts",
                        code=ErrorCode.LIMIT_EXCEEDED, status=413)


def job_specs(variant: Variant) -> Iterator[tuple[int, dict[str, Any]]]:
    """(start index, complete job spec with its explicit x0) for each job of one combination."""
    for start, x0 in enumerate(variant.starts):
        yield start, {**variant.spec, "x0": x0}


# --- reading a sweep back -----------------------------------------------------------------------

def grid_values(grid: list[Any], n_starts: int, index: int) -> tuple[dict[str, Any], int]:
    """The grid values and start index of job ``index`` of a sweep with ``grid`` ([key, values] pairs)."""
    combo, start = divmod(index, n_starts)
    out: dict[str, Any] = {}
    for key, values in reversed(grid):
        combo, at = divmod(combo, len(values))
        out[key] = values[at]
    return dict(reversed(list(out.items()))), start


def best_minimum(spec: dict[str, Any], numel: int) -> float | None:
    """The lowest known minimum of a job's objective (a catalog objective with known minima), or
    None (an expression, or a catalog objective whose minima are not known for its parameters).
    An objective of data needs the spec's ``data`` with its values (not stored references)."""
    objective = spec.get("objective")
    if not isinstance(objective, dict):
        return None
    entry = CATALOG.get(objective.get("name"))
    if entry is None:
        return None
    params = {**entry.params, **(objective.get("params") or {})}
    if entry.data:
        data = spec.get("data") or {}
        if not all(isinstance(data.get(name), list) or (isinstance(data.get(name), dict) and "sha256" not in data[name])
                   for name in entry.data):
            return None
        minima = entry.known_minima(numel, params, {name: data_tensor(value) for name, value in data.items()})
    else:
        minima = entry.known_minima(numel, params)
    return min((f for _, f in minima), default=None)