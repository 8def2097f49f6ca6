"""The v1 descent job spec as pydantic models: the shape of a request, strict about fields.

These models check structure and types; ``service.spec.validate`` adds the checks that need the
whole spec (the expression against x0's shape, limits, torch's own checks of the optimiser). Their
JSON Schema is what ``/openapi.json`` publishes: ``service.api.components`` only writes in the
limits that depend on settings (``max_expression_chars``, ``max_steps``, ``max_tags``,
``max_seconds``, ``max_elements``). The value types are ``service.spec.fields``'s, the optimizer
and scheduler ``service.spec.choices``'s.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, StrictBool, StrictInt, StrictStr, TypeAdapter, create_model
from pydantic_core import CoreSchema

from service.spec.catalog import CATALOG
from service.spec.choices import OptimizerSpec, SchedulerSpec
from service.spec.fields import MAX_DIMENSIONS, MAX_SEED, NestedNumbers, Number, Seed, Text
from service.spec.values import MAX_NESTING

__all__ = ["MAX_SEED", "Number", "Seed", "Text", "InitSpec", "JobSpec", "NamedObjective", "PerJob",
           "RecordSpec", "StopSpec"]
CATALOG_PARAM_BOUND = 1e6
DEFAULT_OPTIMIZER = {"name": "sgd", "lr": 0.001}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _catalog_variant(name: str) -> type[BaseModel]:
    entry = CATALOG[name]
    params = {key: {"type": "number", "minimum": -CATALOG_PARAM_BOUND, "maximum": CATALOG_PARAM_BOUND,
                    "default": default} for key, default in entry.params.items()}
    return create_model(
        f"NamedObjective_{name}", __config__=ConfigDict(extra="forbid", title=name), __doc__=entry.description,
        name=(Literal[name], ...),
        params=(dict[str, float], Field(default_factory=dict, json_schema_extra={
            "properties": params, "additionalProperties": False})))


_CATALOG_VARIANTS = TypeAdapter(Annotated[Union[tuple(_catalog_variant(name) for name in CATALOG)],  # type: ignore[misc]
                                          Field(discriminator="name")])


class NamedObjective(_Strict):
    """A catalog objective by name, e.g. ``{"name": "rosenbrock", "params": {"b": 100}}``; its
    schema is one component per catalog objective (``NamedObjective_<name>``), so that a generated
    client names each one's class after it. Which name and parameters exist is checked by
    ``service.spec.validate``, with the catalog's own messages."""

    name: Text = Field(max_length=64)
    params: dict[Text, Number] = Field(default_factory=dict)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"oneOf": handler(_CATALOG_VARIANTS.core_schema)["oneOf"],
                "description": "A catalog objective by name (GET /v1/objectives), with optional parameters; "
                               "its formula is written in x, so 'variable' must be x"}


class InitSpec(_Strict):
    """A generated start: a shape and a seeded distribution (``seed`` defaults to the job's)."""

    shape: list[Annotated[StrictInt, Field(json_schema_extra={"minimum": 1})]] = Field(
        min_length=1, max_length=MAX_DIMENSIONS, description="Every dimension at least 1, at most max_elements in all")
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


def _tag_keys(schema: dict[str, Any]) -> None:
    """Tag keys as ``propertyNames`` (pydantic writes a key pattern as ``patternProperties``,
    which would let a key that fails it through)."""
    (pattern, values), = schema.pop("patternProperties").items()
    schema.update(propertyNames={"maxLength": 64, "pattern": pattern}, additionalProperties=values)


class PerJob(_Strict):
    """The fields in which jobs that run together as one batch may differ (``service.spec.batchkey``)."""

    x0: Union[NestedNumbers, InitSpec, None] = Field(
        default=None, description="The start: a nested list of numbers, or a generated start. Required (and not "
                                  "null) for an expression objective; a catalog objective has a default start.")
    seed: Seed = Field(default=0, description="Seeds a generated x0 that sets no seed of its own.")
    name: Text | None = Field(default=None, max_length=200)
    tags: dict[Text, Annotated[Text, Field(json_schema_extra={"maxLength": 256})]] = Field(
        default_factory=dict, description="At most max_tags tags; keys up to 64 and values up to 256 characters",
        json_schema_extra=_tag_keys)


NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,31}$"
DataName = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
MAX_DATA_TENSORS = 16


Expression = Annotated[Text, Field(
    json_schema_extra={"minLength": 1}, description="An expression (max_expression_chars); see service/expr/parse.py")]

# x0 is required for an expression objective (a catalog objective has a default start), and a
# catalog objective's formula is written in x.
_OBJECTIVE_RULES = [
    {"if": {"required": ["objective"], "properties": {"objective": {"type": "string"}}},
     "then": {"required": ["x0"], "properties": {"x0": {"not": {"type": "null"}}}}},
    {"if": {"required": ["objective"], "properties": {"objective": {"type": "object"}}},
     "then": {"properties": {"variable": {"const": "x"}}}},
]


class JobSpec(PerJob):
    """A descent job: minimise the objective over 'variable' from x0. No string anywhere in it (keys
    too) may hold a NUL or a lone surrogate, and objects and lists nest at most MAX_NESTING levels
    (x0's numbers aside)."""

    model_config = ConfigDict(json_schema_extra={
        "description": __doc__.replace("MAX_NESTING", str(MAX_NESTING)) if __doc__ else None,
        "allOf": _OBJECTIVE_RULES})

    objective: Union[Expression, NamedObjective] = Field(
        description="An expression in x (or 'variable') such as '10 * (x ** 2).sum()' that gives one number, "
                    "or a catalog objective by name")
    variable: Text = Field(default="x", pattern=NAME_PATTERN)
    data: dict[DataName, Union[NestedNumbers, InitSpec]] = Field(
        default_factory=dict, max_length=MAX_DATA_TENSORS,
        description="Named tensors the objective reads besides its variable, e.g. {'A': [[1, 2], [3, 4]], "
                    "'b': [1, 0]} for '((A @ x - b) ** 2).mean()': nested lists of numbers, or generated as x0 "
                    "is ({'shape', 'init', 'seed', ...}; the seed defaults to 0, not the job's). In the job's "
                    "dtype and on its device; shared by the jobs of a sweep.")
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: dict(DEFAULT_OPTIMIZER), validate_default=True,
        description="The torch.optim optimiser (its canonical name, as GET /v1/optimizers lists it; another "
                    "case or underscores are accepted and stored canonical) and its keyword arguments; "
                    "sgd with lr 0.001 if left out")
    scheduler: SchedulerSpec | None = Field(
        default=None, description="A torch.optim.lr_scheduler scheduler (its canonical name, as GET /v1/optimizers "
                                  "lists it; another case or underscores are accepted and stored canonical) and "
                                  "its keyword arguments")
    steps: StrictInt = Field(default=100, ge=0)
    stop: StopSpec = Field(default_factory=StopSpec)
    record: RecordSpec = Field(default_factory=RecordSpec)
    device: Literal["cpu", "gpu", "auto"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"

