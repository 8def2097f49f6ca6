"""The sweep request (``POST /v1/sweeps``) as a pydantic model: the one statement of its shape.

``service.spec.sweep.plan_sweep`` validates every request through ``SweepRequest`` (``parse_request``),
and ``/openapi.json`` publishes the model's generated JSON Schema, with the configured limits
written in and ``base`` described by the job spec's own schema (``service.api.openapi``). A refusal
names the field as the rest of the API does (``starts.count``, ``grid.optimizer.lr``) and says what
that field must be, in words written for it (``_MESSAGES``), not pydantic's generic ones.

What the model does not check, and the planner does: the job count (the grid's product times the
starts) and the number of tags against the configured limits, and that the base with every
combination of grid values is a job spec (``service.spec.sweep.expand``).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    InstanceOf,
    StrictInt,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.errors import ErrorCode
from service.spec.error import SpecError
from service.spec.model import MAX_SEED, Number, RecordSpec, Seed, StopSpec, Text
from service.spec.values import MAX_MAGNITUDE, text_problem

DEFAULT_TOLERANCE = 1e-6
MAX_GRID_KEYS = 32
NAME_CHARS = 200
TAG_KEY_CHARS, TAG_VALUE_CHARS = 64, 256

# Keys a grid may vary: whole values, or one argument of the optimiser, scheduler or catalog
# objective, or one field of stop and record. x0 is the starts' business, name and tags the base's.
WHOLE_KEYS = ("objective", "variable", "optimizer", "scheduler", "steps", "stop", "record", "device", "dtype", "seed")
_SEGMENT = "[A-Za-z_][A-Za-z0-9_]{0,63}"
_GRID_KEY = ("(?:" + "|".join(WHOLE_KEYS) + r"|objective\.name|objective\.params\." + _SEGMENT
             + r"|(?:optimizer|scheduler)\." + _SEGMENT
             + r"|stop\.(?:" + "|".join(StopSpec.model_fields) + ")"
             + r"|record\.(?:" + "|".join(RecordSpec.model_fields) + "))")
# The grid-key rule, as the document states it (ECMA-262: `$` is the end of the text) and as the
# planner applies it (a full match, so a trailing newline is no loophole).
GRID_KEY_PATTERN = f"^{_GRID_KEY}$"
_GRID_KEY_RE = re.compile(_GRID_KEY)
ALLOWED_GRID_KEYS = ("objective", "objective.name", "objective.params.P", "variable", "optimizer",
                     "optimizer.ARG", "scheduler", "scheduler.ARG", "steps",
                     *(f"stop.{f}" for f in StopSpec.model_fields), "stop",
                     *(f"record.{f}" for f in RecordSpec.model_fields), "record", "device", "dtype", "seed")


def _grid_key(key: str) -> str:
    problem = text_problem(key)
    if problem:
        raise PydanticCustomError("grid_key_text", "a key of 'grid' {problem}", {"problem": problem})
    if not _GRID_KEY_RE.fullmatch(key):
        raise PydanticCustomError(
            "grid_key", "'{key}' is not a key a grid may vary; use one of {allowed} (starts replace x0)",
            {"key": key[:80], "allowed": ", ".join(ALLOWED_GRID_KEYS)})
    return key


GridKey = Annotated[str, AfterValidator(_grid_key)]
GridValues = Annotated[list[Any], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomStarts(_Strict):
    """Random starts of x0's shape (the base's, or its catalog objective's default start), drawn by
    numpy's default_rng(seed): the same points for every combination of grid values."""

    count: StrictInt = Field(ge=1, description="Starts per combination of grid values")
    init: Literal["uniform", "normal"] = "uniform"
    low: Number = Field(default=-1.0, description="uniform: the lower bound")
    # Checked against low even when left out (validate_default): low 3 with no high is refused.
    high: Number = Field(default=1.0, validate_default=True, description="uniform: the upper bound, above low")
    mean: Number = Field(default=0.0, description="normal: the mean")
    std: Number = Field(default=1.0, gt=0, description="normal: the standard deviation (positive whatever the init)")
    seed: Seed = 0

    @field_validator("high")
    @classmethod
    def _above_low(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if info.data.get("init") == "uniform" and low is not None and not low < high:
            raise PydanticCustomError("starts_high", "'starts.high' must be greater than 'starts.low'")
        return high


# Each start is taken as it is (a list, not copied: there may be 100,000 of them); its numbers and
# shape are the planner's check (service.spec.sweep: rectangular, finite, one shape for all).
ExplicitStarts = Annotated[list[InstanceOf[list]], Field(
    min_length=1, description="Explicit starts (each an x0), all of one shape")]


def _starts_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "random"
    return None


def _one_of_starts(schema: dict[str, Any]) -> None:
    """pydantic writes ``starts`` as anyOf[oneOf[list, random], null]; say it as one oneOf."""
    branches = [b for b in schema.pop("anyOf", []) if isinstance(b, dict)]
    flat: list[Any] = [{"type": "null", "description": "As if left out: every job starts from the base's x0"}]
    for branch in branches:
        flat.extend(branch.get("oneOf", []) if "oneOf" in branch else [] if branch.get("type") == "null" else [branch])
    schema["oneOf"] = flat


Starts = Annotated[
    Annotated[ExplicitStarts, Tag("list")] | Annotated[RandomStarts, Tag("random")],
    Discriminator(_starts_kind, custom_error_type="starts_kind",
                  custom_error_message="'starts' must be a list or an object"),
]


class SweepRequest(_Strict):
    """A base job spec, a grid of values over its dotted keys (combined as a product) and starts;
    each job is stored as a complete job spec with its own explicit x0."""

    base: dict[str, Any] = Field(description="A job spec; keys the grid sets may be left out, and starts, "
                                             "when given, replace its x0")
    grid: dict[GridKey, GridValues] = Field(
        default_factory=dict, max_length=MAX_GRID_KEYS,
        description="Dotted spec keys to lists of values, e.g. {\"optimizer.lr\": [0.001, 0.01]}; a value "
                    "the spec refuses is a 400 naming grid.<key>",
        json_schema_extra={"propertyNames": {"pattern": GRID_KEY_PATTERN}})
    starts: Starts | None = Field(default=None, json_schema_extra=_one_of_starts)
    tolerance: Number = Field(default=DEFAULT_TOLERANCE, ge=0,
                              description="steps_to_tolerance: the first recorded step with f within this "
                                          "of the best known minimum")
    name: Text | None = Field(default=None, max_length=NAME_CHARS)
    tags: dict[Annotated[Text, Field(max_length=TAG_KEY_CHARS)], Annotated[Text, Field(max_length=TAG_VALUE_CHARS)]] = (
        Field(default_factory=dict))


REQUEST_FIELDS = tuple(SweepRequest.model_fields)
START_FIELDS = tuple(RandomStarts.model_fields)

# What each field must be, as a refusal says it (the model's constraints, in words).
_MESSAGES = {
    "": "a sweep must be a JSON object: {\"base\": {job spec}, \"grid\": {...}, \"starts\": ...}",
    "grid": "'grid' must be an object of lists: {\"optimizer.lr\": [0.001, 0.01], ...}",
    "starts": "'starts' must be a list of x0 values or {\"count\", \"init\", \"low\", \"high\", \"seed\"}",
    "starts.count": "'starts.count' must be an integer of at least 1",
    "starts.init": "'starts.init' must be 'uniform' or 'normal'",
    "starts.std": f"'starts.std' must be a positive number, at most {MAX_MAGNITUDE:g}",
    "starts.seed": f"'starts.seed' must be an integer from 0 to {MAX_SEED}",
    "tolerance": f"'tolerance' must be a number from 0 to {MAX_MAGNITUDE:g}",
    "name": f"'name' must be text of at most {NAME_CHARS} characters, with no NUL",
    **{f"starts.{key}": f"'starts.{key}' must be a finite number within ±{MAX_MAGNITUDE:g}"
       for key in ("low", "high", "mean")},
}


def tags_message(max_tags: int) -> str:
    return (f"'tags' must be an object of at most {max_tags} text values, keys up to {TAG_KEY_CHARS} "
            f"and values up to {TAG_VALUE_CHARS} characters")


def parse_request(data: Any, max_tags: int) -> SweepRequest:
    """``data`` as a ``SweepRequest``, or the SpecError naming its first fault; ``max_tags``: the
    configured bound on tags (checked here, as a job's are)."""
    try:
        request = SweepRequest.model_validate(data)
    except ValidationError as exc:
        raise _refusal(exc, max_tags) from None
    if len(request.tags) > max_tags:
        raise SpecError("tags", tags_message(max_tags), code=ErrorCode.LIMIT_EXCEEDED)
    return request


def _refusal(exc: ValidationError, max_tags: int) -> SpecError:
    """The first problem, as the field's own refusal: an unknown field of the request first (a
    misspelt key is the likeliest mistake), then the fields in the model's order, and within one,
    an unknown key, then the whole before its parts (a grid of too many keys before any one key)."""
    def rank(error: Any) -> tuple[int, int, int, int]:
        loc, extra = error["loc"], error["type"] == "extra_forbidden"
        top = REQUEST_FIELDS.index(loc[0]) if loc and loc[0] in REQUEST_FIELDS else -1
        return (0 if extra and len(loc) == 1 else 1, top, 0 if extra else 1, len(loc))

    error = min(exc.errors(include_url=False), key=rank)
    loc = [str(part) for part in error["loc"]]
    if loc[:1] == ["starts"] and loc[1:2] in (["list"], ["random"]):
        del loc[1]  # the union's branch, not a field
    kind = error["type"]
    if not loc:
        return SpecError(None, _MESSAGES[""])
    top = loc[0]
    if kind == "extra_forbidden" and len(loc) == 1:
        return SpecError(top[:80], f"unknown field '{top[:80]}'; a sweep has {', '.join(REQUEST_FIELDS)}")
    if top == "base":
        if kind == "missing":
            return SpecError("base", "'base' is required: the job spec every job of the sweep starts from")
        return SpecError("base", "'base' must be an object: the job spec every job of the sweep starts from")
    if top == "grid":
        return _grid_refusal(error, loc)
    if top == "starts":
        return _starts_refusal(error, loc)
    if top == "tags":
        return SpecError("tags", tags_message(max_tags), code=ErrorCode.LIMIT_EXCEEDED)
    return SpecError(top, _MESSAGES[top])


def _grid_refusal(error: Any, loc: list[str]) -> SpecError:
    kind = error["type"]
    if len(loc) == 1:
        if kind == "too_long":
            return SpecError("grid", f"'grid' has {len(error['input'])} keys, over {MAX_GRID_KEYS}")
        return SpecError("grid", _MESSAGES["grid"])
    key = loc[1]
    if kind == "grid_key_text":
        return SpecError("grid", error["msg"])
    if kind == "grid_key":
        return SpecError(f"grid.{key[:80]}", error["msg"])
    return SpecError(f"grid.{key}", f"grid '{key}' must be a non-empty list of values")


def _starts_refusal(error: Any, loc: list[str]) -> SpecError:
    kind = error["type"]
    if len(loc) == 1:
        if kind == "too_short":
            return SpecError("starts", "'starts' as a list needs at least one x0")
        return SpecError("starts", _MESSAGES["starts"])
    field = loc[1]
    if field.isdigit():  # an explicit start that is not a list
        return SpecError(f"starts.{field}", "every start must be a nested list of numbers (x0)")
    if kind == "extra_forbidden":
        return SpecError(f"starts.{field[:40]}",
                         f"unknown field '{field[:40]}' of starts; it has {', '.join(START_FIELDS)}")
    if kind == "starts_high":
        return SpecError("starts.high", error["msg"])
    return SpecError(f"starts.{field}", _MESSAGES[f"starts.{field}"])
