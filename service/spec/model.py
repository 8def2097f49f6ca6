"""The v1 descent job spec as pydantic models: the shape of a request, strict about fields.

These models check structure and types; ``service.spec.validate`` adds the checks that need the
whole spec (the expression against x0's shape, optimiser arguments, limits). Every number field is
a ``Number`` (finite, within 1e12), every string a ``Text`` (storable: no NUL, no lone surrogate),
and seeds are ``Seed``s (what ``torch.Generator.manual_seed`` takes, kept to the signed 64-bit range).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from service.spec.values import MAX_MAGNITUDE, in_range, text_problem

MAX_SEED = 2**63 - 1


def _finite(value: int | float) -> int | float:
    if not in_range(value):
        raise ValueError(f"must be a finite number within ±{MAX_MAGNITUDE:g}")
    return value


def _storable(text: str) -> str:
    problem = text_problem(text)
    if problem:
        raise ValueError(f"the text {problem}")
    return text


Number = Annotated[Union[StrictInt, StrictFloat], AfterValidator(_finite)]
Text = Annotated[StrictStr, AfterValidator(_storable)]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedObjective(_Strict):
    """A catalog objective by name, e.g. ``{"name": "rosenbrock", "params": {"b": 100}}``."""

    name: Text = Field(max_length=64)
    params: dict[Text, Number] = Field(default_factory=dict)


class InitSpec(_Strict):
    """A generated start: a shape and a seeded distribution (``seed`` defaults to the job's)."""

    shape: list[StrictInt] = Field(min_length=1, max_length=8)
    init: Literal["normal", "uniform", "zeros", "ones"] = "normal"
    seed: Seed | None = None
    low: Number = -1.0
    high: Number = 1.0
    mean: Number = 0.0
    std: Number = 1.0


class StopSpec(_Strict):
    """Early stops, each optional."""

    grad_norm: Number | None = Field(default=None, ge=0)
    max_seconds: Number | None = Field(default=None, gt=0)


class RecordSpec(_Strict):
    """What the history keeps: every k-th row (and always the last), with x and/or grad."""

    every: StrictInt = Field(default=1, ge=1)
    x: StrictBool = True
    grad: StrictBool = False


class PerJob(_Strict):
    """The fields in which jobs that run together as one batch may differ (``service.spec.batchkey``)."""

    x0: Union[list[Any], InitSpec, None] = Field(
        default=None, description="Nested list of numbers, or a generated start; catalog default if omitted."
    )
    seed: Seed = Field(default=0, description="Seeds a generated x0 that sets no seed of its own.")
    name: Text | None = Field(default=None, max_length=200)
    tags: dict[Text, Text] = Field(default_factory=dict)


NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,31}$"
DataName = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
MAX_DATA_TENSORS = 16


class JobSpec(PerJob):
    """A descent job: minimise ``objective`` over ``variable`` from ``x0``."""

    objective: Union[Text, NamedObjective] = Field(
        description="An expression such as '10 * (x ** 2).sum()', or a catalog objective by name."
    )
    variable: Text = Field(default="x", pattern=NAME_PATTERN)
    data: dict[DataName, Union[list[Any], InitSpec]] = Field(
        default_factory=dict, max_length=MAX_DATA_TENSORS,
        description="Named tensors the objective reads besides its variable, e.g. {'A': [[1, 2], [3, 4]], "
                    "'b': [1, 0]} for '((A @ x - b) ** 2).mean()': nested lists of numbers, or generated as x0 "
                    "is ({'shape', 'init', 'seed', ...}; the seed defaults to 0, not the job's). In the job's "
                    "dtype and on its device; shared by the jobs of a sweep.")
    optimizer: dict[str, Any] = Field(
        default_factory=lambda: {"name": "sgd", "lr": 0.001},
        description="{'name': one of GET /v1/optimizers, ...keyword arguments of that torch.optim class}",
    )
    scheduler: dict[str, Any] | None = None
    steps: StrictInt = Field(default=100, ge=0)
    stop: StopSpec = Field(default_factory=StopSpec)
    record: RecordSpec = Field(default_factory=RecordSpec)
    device: Literal["cpu", "gpu", "auto"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"


def json_schema() -> dict[str, Any]:
    """The JSON Schema the API publishes for a job spec."""
    return JobSpec.model_json_schema()
