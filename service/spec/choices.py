"""The optimizer and scheduler of a job spec as pydantic models, generated from the allow-list.

One model per allowed torch class (``Optimizer_adam``, ``Scheduler_step_lr``, ...): ``name`` its
canonical name and each user-settable argument typed from its default (true or false, a number
within its range, an integer, a short string, a fixed-length list, and for a ``None`` default a
number, a short string, a list of numbers or null), the required ones required, nothing else
allowed. ``OptimizerSpec`` and ``SchedulerSpec`` are unions of them discriminated by ``name``;
before that, ``optimizers.admitted`` canonicalises the name (case and underscores do not matter)
and checks the arguments, so a refusal says what today's admission says. A model dumps only the
arguments given, so a spec is stored and shown as it was given, its names canonical and an
integer argument given as 2.0 stored as 2.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, create_model, model_serializer

from service.spec.fields import Number
from service.spec.optimizers import (
    INTEGER_ARGS,
    RANGES,
    MAX_LIST,
    OPTIMIZERS,
    SCHEDULERS,
    admitted,
    arguments,
    optimizer_class,
    required_arguments,
    scheduler_class,
)
from service.spec.values import MAX_MAGNITUDE

ShortText = Annotated[StrictStr, Field(max_length=64)]


class _Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _given(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}


def _number(name: str) -> Any:
    """A number argument: an integer for the counts, within ``RANGES`` where it has one."""
    low, high, inclusive = RANGES.get(name, (-math.inf, math.inf, True))
    bounds: dict[str, float] = {}
    if name in INTEGER_ARGS:
        return Annotated[StrictInt, Field(ge=max(low, -MAX_MAGNITUDE), le=min(high, MAX_MAGNITUDE))]
    if math.isfinite(low):
        bounds["ge" if inclusive else "gt"] = low
    if math.isfinite(high):
        bounds["le"] = high
    return Annotated[Number, Field(**bounds)] if bounds else Number


def _argument(name: str, default: Any) -> Any:
    """The type of an argument, from its default as ``optimizers._check_value`` reads it."""
    if isinstance(default, bool):
        return StrictBool
    if isinstance(default, (tuple, list)):
        return tuple[tuple(_argument(name, item) for item in default)]  # type: ignore[misc]
    if isinstance(default, str):
        return ShortText
    if default is None:
        return Optional[Union[_number(name), ShortText, Annotated[list[Number], Field(max_length=MAX_LIST)]]]
    return _number(name)


def _model(prefix: str, name: str, cls: type) -> type[_Choice]:
    required = set(required_arguments(cls))
    fields: dict[str, Any] = {"name": (Literal[name], ...)}
    for arg, default in arguments(cls).items():
        fields[arg] = (_argument(arg, default), ... if arg in required else default)
    doc = f"{cls.__module__}.{cls.__name__} ('{name}') and the keyword arguments it takes."
    return create_model(f"{prefix}_{name}", __base__=_Choice, __doc__=doc, **fields)


def _union(kind: str, prefix: str, table: dict[str, str], lookup: Any) -> Any:
    models = tuple(_model(prefix, name, lookup(name)) for name in table)
    return Annotated[Union[models], Field(discriminator="name"),  # type: ignore[valid-type]
                     BeforeValidator(partial(admitted, kind=kind))]


OptimizerSpec = _union("optimizer", "Optimizer", OPTIMIZERS, optimizer_class)
SchedulerSpec = _union("scheduler", "Scheduler", SCHEDULERS, scheduler_class)
CHOICE_NAMES = frozenset(OPTIMIZERS) | frozenset(SCHEDULERS)
