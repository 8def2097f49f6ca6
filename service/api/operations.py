"""Each API operation declared once: its path, method, query model, request body, responses and
errors. The handler reads its query parameters through the declaration (``Operation.args``) and
``/openapi.json`` is generated from the same declarations (``Operation.openapi``), so the
document's bounds are the bounds the handlers enforce.

A query model is a pydantic model with ``extra="forbid"``: its fields are the parameters the
operation takes, their ``Field`` constraints (ge, le, pattern, max_length, a ``Literal``'s values)
the bounds, their descriptions the document's. A refused parameter is a 400 ``invalid_parameter``
naming it; a parameter the model does not have, too. ``name=`` counts as absent unless the field
carries ``EMPTY_IS_A_VALUE``. The message is a validator's own words for what a validator refuses
(ValueError), else the field's ``Says`` when it has one, else one made from the field's bounds.

A leaf: it imports no blueprint; the blueprints declare their operations with it and
``service.api.openapi`` gathers them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal

import annotated_types
from flask import request
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from service.api.errors import bad_parameter
from service.api.openapi_parts import errors as error_responses
from service.config import Limits

__all__ = ["Query", "Operation", "Says", "EMPTY_IS_A_VALUE", "Int", "Seconds", "text", "one_of", "declared", "Field",
           "AfterValidator"]


class Query(BaseModel):
    """The query parameters of an operation: these and no others."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Says:
    """A field's refusal, with ``{name}``, ``{raw}`` (its first 40 characters), ``{ge}`` and ``{le}``."""

    message: str


EMPTY_IS_A_VALUE = "empty-is-a-value"  # metadata: ``name=`` is validated as the empty string


# Numbers are plain ASCII decimals: Python's int() and float() would also take " 5", "+5", "1_0"
# and other scripts' digits, none of which the document allows.
_INTEGER = re.compile(r"-?[0-9]{1,30}")
_DECIMAL = re.compile(r"-?[0-9]{1,20}(\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?")


def _ascii_int(raw: Any) -> Any:
    if isinstance(raw, str):
        if not _INTEGER.fullmatch(raw):
            raise ValueError(f"must be an integer, got {raw[:40]!r}")
        return int(raw)
    return raw


def _ascii_seconds(raw: Any) -> Any:
    if isinstance(raw, str):
        if not _DECIMAL.fullmatch(raw):
            raise PydanticCustomError("not_a_number", "must be a number")  # the field's Says tells it
        return float(raw)
    return raw


Int = Annotated[int, BeforeValidator(_ascii_int)]
Seconds = Annotated[float, BeforeValidator(_ascii_seconds), Says("'{name}' must be a number of seconds from {ge:g} to {le:g}")]


def text(max_chars: int = 600) -> Any:
    """A text parameter of at most ``max_chars``, refused when it holds a control character (NUL
    among them: the database cannot even compare with one) or a lone surrogate."""
    def check(raw: Any) -> Any:
        if isinstance(raw, str) and (len(raw) > max_chars or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in raw)):
            raise ValueError(f"must be at most {max_chars} characters, with no control characters")
        return raw
    return Annotated[str, BeforeValidator(check), Field(max_length=max_chars)]


def one_of(values: tuple[str, ...] | list[str]) -> Any:
    """A string that is one of ``values`` (the document's enum)."""
    return Literal[tuple(values)]  # type: ignore[valid-type]


def _meta(info: Any, kind: type) -> Any:
    return next((m for m in info.metadata if isinstance(m, kind)), None)


def _bound(info: Any, kind: type, attr: str) -> Any:
    found = _meta(info, kind)
    return getattr(found, attr) if found is not None else None


def _refusal(model: type[Query], error: dict[str, Any], raw: dict[str, str]) -> Exception:
    name = str(error["loc"][0]) if error["loc"] else "query"
    if error["type"] == "extra_forbidden":
        takes = ", ".join(sorted(model.model_fields)) or "none"
        return bad_parameter(name[:40], f"unknown query parameter {name[:40]!r}; this endpoint takes: {takes}")
    info = model.model_fields[name]
    ge, le = _bound(info, annotated_types.Ge, "ge"), _bound(info, annotated_types.Le, "le")
    says = _meta(info, Says)
    if error["type"] == "value_error":  # a validator's own words
        return bad_parameter(name, f"'{name}' {error['ctx']['error']}")
    if says is not None:
        return bad_parameter(name, says.message.format(name=name, raw=raw.get(name, "")[:40], ge=ge, le=le))
    if "enum" in (schema := model.model_json_schema()["properties"][name]):
        return bad_parameter(name, f"'{name}' must be one of {', '.join(schema['enum'])}")
    if ge is not None or le is not None:
        bound = f"between {ge} and {le}" if le is not None else f"at least {ge}"
        return bad_parameter(name, f"'{name}' must be {bound}")
    return bad_parameter(name, f"'{name}' is not valid: {error['msg']}")


_DECLARED: dict[tuple[str, str], "Operation"] = {}
_PATH_PARAMS = {"job_id": "A job's id", "sweep_id": "A sweep's id"}


@dataclass
class Operation:
    """One operation of the API, declared once: the handler parses with it, the document is made of it."""

    method: str
    path: str  # OpenAPI's form: /v1/jobs/{job_id}
    operation_id: str
    summary: str
    responses: dict[str, Any]  # the answers that are not errors, by status
    errors: tuple[int, ...]
    query: type[Query] | None = None
    description: str | None = None
    headers: tuple[dict[str, Any], ...] = ()  # header parameters
    body: Callable[[Limits], dict[str, Any]] | None = None  # the requestBody, for the configured limits
    public: bool = False  # anyone may call it: no security requirement
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _DECLARED[(self.path, self.method)] = self

    def args(self) -> Any:
        """The request's query parameters, validated (a 400 naming the first one refused)."""
        cached = request.environ.get("descent.query")  # the request's own (an app context may outlive it)
        if cached is not None:
            return cached
        model = self.query or Query
        raw = {name: request.args.get(name, "") for name in request.args}
        given = {name: value for name, value in raw.items()
                 if value != "" or name not in model.model_fields
                 or EMPTY_IS_A_VALUE in model.model_fields[name].metadata}
        try:
            parsed = model.model_validate(given)
        except ValidationError as err:
            raise _refusal(model, err.errors()[0], raw) from None
        request.environ["descent.query"] = parsed
        return parsed

    def openapi(self, limits: Limits) -> dict[str, Any]:
        """This operation as the document states it."""
        params = [{"name": name, "in": "path", "required": True, "description": _PATH_PARAMS.get(name, name),
                   "schema": {"type": "string", "format": "uuid"}} for name in re.findall(r"{(\w+)}", self.path)]
        params += [*self.headers, *_query_parameters(self.query)]
        operation: dict[str, Any] = {"operationId": self.operation_id, "summary": self.summary}
        if self.description:
            operation["description"] = self.description
        if params:
            operation["parameters"] = params
        if self.body is not None:
            operation["requestBody"] = self.body(limits)
        operation["responses"] = {**self.responses, **error_responses(*self.errors)}
        if self.public:
            operation["security"] = []
        return {**operation, **self.extra}


def _query_parameters(model: type[Query] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    props = model.model_json_schema()["properties"]
    params = []
    for name, info in model.model_fields.items():
        schema = dict(props[name])
        schema.pop("title", None)
        description = schema.pop("description", "")
        branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
        for branch in branches:  # an optional parameter: its one non-null branch
            schema = {**branch, **schema}
        if schema.get("default", 0) is None:
            del schema["default"]
        if "enum" in schema and "const" not in schema:
            schema.setdefault("type", "string")
        param = {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
        if EMPTY_IS_A_VALUE not in info.metadata:
            param["allowEmptyValue"] = True
        params.append(param)
    return params


def declared() -> dict[tuple[str, str], Operation]:
    """Every operation declared so far, by (path, method)."""
    return dict(_DECLARED)
