"""Sweeps: one base job spec, a grid of values over its dotted keys and a set of starts, expanded
into many complete job specs.

``plan_sweep`` checks a request's structure and counts its jobs (the product of the grid's lists
times the starts) against ``limits.max_sweep_jobs`` before anything is expanded. ``expand`` then
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
import re
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from service.config import Limits
from service.errors import ErrorCode
from service.spec.catalog import CATALOG
from service.spec.error import SpecError
from service.spec.model import MAX_SEED, InitSpec, JobSpec, RecordSpec, StopSpec
from service.spec.start import start_tensor
from service.spec.validate import CheckedSpec, _nested_shape, check_spec
from service.spec.values import MAX_MAGNITUDE, first_unstorable, in_range, text_problem

DEFAULT_TOLERANCE = 1e-6
MAX_GRID_KEYS = 32
# Numbers of x0 a sweep may store over all its jobs (100,000 jobs of 20 parameters): every job's
# spec holds its own explicit start.
MAX_START_VALUES = 2_000_000
REQUEST_FIELDS = ("base", "grid", "starts", "tolerance", "name", "tags")
START_FIELDS = ("count", "init", "low", "high", "mean", "std", "seed")

# Keys a grid may vary: whole values, or one argument of the optimiser, scheduler or catalog
# objective, or one field of stop and record. x0 is the starts' business, name and tags the base's.
_WHOLE = ("objective", "variable", "optimizer", "scheduler", "steps", "stop", "record", "device", "dtype", "seed")
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _allowed(key: str) -> bool:
    parts = key.split(".")
    if not all(_SEGMENT.fullmatch(p) for p in parts):
        return False
    if len(parts) == 1:
        return parts[0] in _WHOLE
    head, rest = parts[0], parts[1:]
    if head in ("optimizer", "scheduler"):
        return len(rest) == 1
    if head == "stop":
        return len(rest) == 1 and rest[0] in StopSpec.model_fields
    if head == "record":
        return len(rest) == 1 and rest[0] in RecordSpec.model_fields
    if head == "objective":
        return rest == ["name"] or (len(rest) == 2 and rest[0] == "params")
    return False


ALLOWED_GRID_KEYS = ("objective", "objective.name", "objective.params.P", "variable", "optimizer",
                     "optimizer.ARG", "scheduler", "scheduler.ARG", "steps",
                     *(f"stop.{f}" for f in StopSpec.model_fields), "stop",
                     *(f"record.{f}" for f in RecordSpec.model_fields), "record", "device", "dtype", "seed")


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
    """The request's structure, checked, and its job count against ``limits.max_sweep_jobs``
    (a 413 naming DESCENT_MAX_SWEEP_JOBS); SpecError naming the field otherwise."""
    if not isinstance(data, dict):
        raise _bad(None, "a sweep must be a JSON object: {\"base\": {job spec}, \"grid\": {...}, \"starts\": ...}")  # type: ignore[arg-type]
    for key in data:
        if key not in REQUEST_FIELDS:
            raise _bad(str(key)[:80], f"unknown field '{str(key)[:80]}'; a sweep has {', '.join(REQUEST_FIELDS)}")
    base = data.get("base")
    if not isinstance(base, dict):
        raise _bad("base", "'base' is required: the job spec every job of the sweep starts from")
    grid = _grid(data.get("grid", {}))
    start_list, starts = None, None
    raw_starts = data.get("starts")
    if isinstance(raw_starts, list):
        if not raw_starts:
            raise _bad("starts", "'starts' as a list needs at least one x0")
        start_list, n_starts = raw_starts, len(raw_starts)
    elif isinstance(raw_starts, dict):
        starts = _random_starts(raw_starts)
        n_starts = starts["count"]
    elif raw_starts is None:
        n_starts = 1
    else:
        raise _bad("starts", "'starts' must be a list of x0 values or {\"count\", \"init\", \"low\", \"high\", \"seed\"}")
    jobs = math.prod(len(values) for _, values in grid) * n_starts
    if jobs > limits.max_sweep_jobs:
        # The count itself only while it is short: a starts.count may have thousands of digits.
        count = f"{jobs:,}" if jobs < 10**15 else "over 10^15"
        raise SpecError("grid", f"this sweep would make {count} jobs (the grid's product times its starts), over "
                        f"the limit of {limits.max_sweep_jobs:,} (DESCENT_MAX_SWEEP_JOBS)",
                        code=ErrorCode.LIMIT_EXCEEDED, status=413)
    tolerance = data.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not in_range(tolerance) or tolerance < 0:
        raise _bad("tolerance", f"'tolerance' must be a number from 0 to {MAX_MAGNITUDE:g}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200 or text_problem(name)):
        raise _bad("name", "'name' must be text of at most 200 characters, with no NUL")
    tags = data.get("tags", {})
    if not isinstance(tags, dict) or len(tags) > limits.max_tags or any(
            not isinstance(v, str) or len(k) > 64 or len(v) > 256 or text_problem(k) or text_problem(v)
            for k, v in tags.items()):
        raise SpecError("tags", f"'tags' must be an object of at most {limits.max_tags} text values, keys up to 64 "
                        "and values up to 256 characters", code=ErrorCode.LIMIT_EXCEEDED)
    return SweepPlan(base=base, grid=grid, starts=starts, start_list=start_list, n_starts=n_starts,
                     tolerance=float(tolerance), name=name, tags=dict(tags), jobs=jobs)


def _grid(raw: Any) -> list[tuple[str, list[Any]]]:
    if not isinstance(raw, dict):
        raise _bad("grid", "'grid' must be an object of lists: {\"optimizer.lr\": [0.001, 0.01], ...}")
    if len(raw) > MAX_GRID_KEYS:
        raise _bad("grid", f"'grid' has {len(raw)} keys, over {MAX_GRID_KEYS}")
    out = []
    for key, values in raw.items():
        if text_problem(key):
            raise _bad("grid", f"a key of 'grid' {text_problem(key)}")
        if not _allowed(key):
            raise _bad(f"grid.{key[:80]}", f"'{key[:80]}' is not a key a grid may vary; use one of "
                       + ", ".join(ALLOWED_GRID_KEYS) + " (starts replace x0)")
        if not isinstance(values, list) or not values:
            raise _bad(f"grid.{key}", f"grid '{key}' must be a non-empty list of values")
        out.append((key, values))
    return out


def _random_starts(raw: dict[str, Any]) -> dict[str, Any]:
    for key in raw:
        if key not in START_FIELDS:
            raise _bad(f"starts.{str(key)[:40]}", f"unknown field '{str(key)[:40]}' of starts; it has {', '.join(START_FIELDS)}")
    out: dict[str, Any] = {"count": raw.get("count"), "init": raw.get("init", "uniform"), "low": raw.get("low", -1.0),
                           "high": raw.get("high", 1.0), "mean": raw.get("mean", 0.0), "std": raw.get("std", 1.0),
                           "seed": raw.get("seed", 0)}
    count = out["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise _bad("starts.count", "'starts.count' must be an integer of at least 1")
    if out["init"] not in ("uniform", "normal"):
        raise _bad("starts.init", "'starts.init' must be 'uniform' or 'normal'")
    for key in ("low", "high", "mean", "std"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not in_range(value):
            raise _bad(f"starts.{key}", f"'starts.{key}' must be a finite number within ±{MAX_MAGNITUDE:g}")
    if out["init"] == "uniform" and not out["low"] < out["high"]:
        raise _bad("starts.high", "'starts.high' must be greater than 'starts.low'")
    if not out["std"] > 0:  # whatever the init, as the OpenAPI document states
        raise _bad("starts.std", "'starts.std' must be positive")
    seed = out["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise _bad("starts.seed", f"'starts.seed' must be an integer from 0 to {MAX_SEED}")
    return out


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


def expand(plan: SweepPlan, limits: Limits) -> list[Variant]:
    """Check every distinct combination of grid values once; SpecError (naming the grid key, the
    base or the starts) for the first that fails. At most MAX_START_VALUES numbers of x0 in all."""
    base = _copy(plan.base)
    if "optimizer" not in base and any(k.startswith("optimizer.") for k, _ in plan.grid):
        base["optimizer"] = JobSpec.model_fields["optimizer"].get_default(call_default_factory=True)
    if plan.start_list is not None:
        _start_list_shape(plan, limits)
        base["x0"] = plan.start_list[0]
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
    return variants


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
    None (an expression, or a catalog objective whose minima are not known for its parameters)."""
    objective = spec.get("objective")
    if not isinstance(objective, dict):
        return None
    entry = CATALOG.get(objective.get("name"))
    if entry is None:
        return None
    minima = entry.minima(numel, {**entry.params, **(objective.get("params") or {})})
    return min((f for _, f in minima), default=None)
