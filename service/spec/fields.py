"""The value types a job spec is built from: finite numbers, storable text, seeds and nested lists.

Every number field is a ``Number`` (finite, within 1e12), every string a ``Text`` (storable: no
NUL, no lone surrogate; its schema says no NUL, the one a pattern can name), seeds are ``Seed``s
(what ``torch.Generator.manual_seed`` takes, kept to the signed 64-bit range), and a tensor given
as numbers is ``NestedNumbers``: validated as a plain list, its shape and values checked by
``service.spec.validate`` at C speed, its schema (the component ``NestedNumbers``) saying what
those checks accept.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import AfterValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, StrictFloat, StrictInt, StrictStr
from pydantic_core import CoreSchema, core_schema

from service.spec.values import MAX_MAGNITUDE, in_range, text_problem

MAX_SEED = 2**63 - 1
MAX_DIMENSIONS = 8  # of x0 and of a data tensor
STORABLE_PATTERN = r"^[^\x00]*$"  # a lone surrogate, refused too, has no pattern


def _finite(value: int | float) -> int | float:
    if not in_range(value):
        raise ValueError(f"must be a finite number within ±{MAX_MAGNITUDE:g}")
    return value


def _storable(text: str) -> str:
    problem = text_problem(text)
    if problem:
        raise ValueError(f"the text {problem}")
    return text


class _StorableSchema:
    """Adds the no-NUL pattern to a string's schema unless it has a pattern of its own."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        out = handler(schema)
        out.setdefault("pattern", STORABLE_PATTERN)
        return out


Number = Annotated[Union[StrictInt, StrictFloat], AfterValidator(_finite)]
Text = Annotated[StrictStr, AfterValidator(_storable), _StorableSchema()]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]


class NestedNumbers:
    """A rectangular nested list of numbers (x0, a data tensor): a list to pydantic, which leaves
    its millions of numbers to ``service.spec.validate``."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.list_schema(core_schema.any_schema(), ref="NestedNumbers")

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        level: dict[str, Any] = {"type": "array", "minItems": 1,
                                 "items": {"type": "number", "minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}}
        levels = [level]
        for _ in range(MAX_DIMENSIONS - 1):
            level = {"type": "array", "minItems": 1, "items": level}
            levels.append(level)
        return {"anyOf": levels, "title": "NestedNumbers",
                "description": f"A rectangular nested list of numbers within ±{MAX_MAGNITUDE:g}, at most "
                               f"{MAX_DIMENSIONS} dimensions deep and max_elements numbers in all"}
