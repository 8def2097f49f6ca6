"""``/openapi.json``: an OpenAPI 3.1 document that states every bound the API enforces.

The job spec's schema is generated from the same pydantic models that validate submissions, and
the sweep request's from the model ``plan_sweep`` validates with (``service.spec.sweep_request``;
its base is the job spec's schema, nothing required), then the configured limits
(``settings.limits``, read when the document is served) are written into them, so the document
always matches the running service. Every JSON response is described by the
pydantic model its handler builds it with (``service.api.schemas``), generated the same way. Query parameters carry the same bounds as the
handlers' ``int_arg`` calls, and every operation lists each status it can answer with (405 is
automatic for a method a path does not have). ``scripts/fuzz.sh`` holds the live API to this
document with Schemathesis; ``tests/api/test_openapi.py`` checks routes and bounds against the app.

What a schema cannot say, and the handlers check: an objective expression must parse and give one
number on x0's shape; x0 must be rectangular with at most ``max_elements`` numbers in all; a job
may record at most ``max_recorded_values`` values; an optimiser's keyword arguments depend on its
class (``GET /v1/optimizers``); a list ``cursor`` must be one this service returned.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from flask import Blueprint, current_app
from pydantic.json_schema import models_json_schema

from service.api.history import FORMATS as HISTORY_FORMATS
from service.api.params import ISO_TIME_PATTERN
from service.api.schemas import RESPONSES
from service.api.history import MAX_POINTS, MAX_ROWS, MAX_STEP
from service.api.events import DEFAULT_STREAM_SECONDS, STREAM_SECONDS
from service.api.deletion import openapi_paths as deletion_paths
from service.api.openapi_parts import REF_TEMPLATE, errors, int_range, json_response, query, ref
from service.api.jobs import ENDED_BY, IDEMPOTENCY_KEY_LENGTH, INCLUDE_PATTERN, LIST_LIMIT, NAME_CHARS, ORDERS, WAIT_SECONDS
from service.api.serialize import HISTORY_FIELDS
from service.api.surface import openapi_paths as surface_paths
from service.api.tensors import openapi_paths as tensor_paths
from service.api.sweeps import LIST_LIMIT as SWEEPS_LIMIT
from service.api.sweeps import SUMMARY_LIMIT
from service.api.workers import openapi_paths as workers_paths
from service.api.metrics import openapi_paths as metrics_paths
from service.config import Limits
from service.spec.catalog import CATALOG
from service.spec.model import JobSpec
from service.spec.optimizers import OPTIMIZERS, SCHEDULERS
from service.spec.sweep_request import SweepRequest
from service.spec.sweep import MAX_GRID_COMBINATIONS
from service.spec.values import MAX_MAGNITUDE, MAX_NESTING
from service.store.jobs import SCOPED_KEY_PREFIX
from service.store.sweeps import SORTS, STATS
from service.store.status import JobStatus

bp = Blueprint("openapi", __name__)

# The bounds the handlers enforce on query parameters, read from the handlers themselves.
HISTORY_JSON_LIMIT = (1, MAX_ROWS)
INT32_MAX = MAX_STEP  # start and every: a step number fits a 32-bit signed integer
NESTED_DEPTH = 8  # x0 has at most 8 dimensions
CATALOG_PARAM_BOUND = 1e6
# A string in a spec may hold no NUL (nor a lone surrogate, which no JSON Schema pattern can name).
STORABLE_TEXT = r"^[^\x00]*$"
_TIME = {"type": "string", "pattern": "^" + re.sub(r"\?P<[a-z]+>", "?:", ISO_TIME_PATTERN) + "$"}

_PUBLIC: list[dict[str, list[str]]] = []  # an operation anyone may call: no security requirement


# --- the job spec ---------------------------------------------------------------------------

_PYDANTIC_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _standard(node: Any) -> Any:
    """pydantic's JSON Schema, made standard: a numeric bound on an optional number comes out as
    pydantic's own keyword (``ge``) next to an ``anyOf``; move it onto the numeric branches. And
    ``integer or number`` (the model's ``Number``, finite and within MAX_MAGNITUDE, a bound its
    validator enforces and pydantic cannot show) becomes one bounded ``number``."""
    if isinstance(node, list):
        return [_standard(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _standard(v) for k, v in node.items()}
    bounds = {_PYDANTIC_BOUNDS[k]: node.pop(k) for k in list(node) if k in _PYDANTIC_BOUNDS}
    branches = node.get("anyOf")
    if isinstance(branches, list) and sorted(b.get("type", "") for b in branches if isinstance(b, dict)) == ["integer", "number"] \
            and all(set(b) == {"type"} for b in branches):
        del node["anyOf"]
        node.update(type="number", minimum=-MAX_MAGNITUDE, maximum=MAX_MAGNITUDE)
    if bounds:
        for target in [node, *node.get("anyOf", [])]:
            if isinstance(target, dict) and target.get("type") in ("integer", "number"):
                for key, value in bounds.items():  # the tighter of the two bounds
                    tighter = max if key in ("minimum", "exclusiveMinimum") else min
                    target[key] = tighter(target[key], value) if key in target else value
                _tidy(target)
    return node


def _tidy(node: dict[str, Any]) -> None:
    """Drop an inclusive bound that an exclusive one makes redundant."""
    if "exclusiveMinimum" in node and node.get("minimum", float("inf")) <= node["exclusiveMinimum"]:
        del node["minimum"]
    if "exclusiveMaximum" in node and node.get("maximum", float("-inf")) >= node["exclusiveMaximum"]:
        del node["maximum"]


def _nested_x0() -> dict[str, Any]:
    """x0 as a list: numbers nested up to 8 deep, every list non-empty."""
    number = {"type": "number", "minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}
    level: dict[str, Any] = {"type": "array", "minItems": 1, "items": number}
    levels = [level]
    for _ in range(NESTED_DEPTH - 1):
        level = {"type": "array", "minItems": 1, "items": level}
        levels.append(level)
    return {"anyOf": levels, "description": f"A rectangular nested list of numbers within ±{MAX_MAGNITUDE:g}, "
            f"at most {NESTED_DEPTH} dimensions deep and max_elements numbers in all"}


def _named_objectives() -> dict[str, Any]:
    """NamedObjective, one of the catalog's objectives, and each of them a component of its own
    (``NamedObjective_<name>``: a generated client names each one's class and its params' after it)."""
    variants = {}
    for entry in CATALOG.values():
        params = {name: {"type": "number", "minimum": -CATALOG_PARAM_BOUND, "maximum": CATALOG_PARAM_BOUND,
                         "default": default} for name, default in entry.params.items()}
        variants[f"NamedObjective_{entry.name}"] = {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "title": entry.name, "description": entry.description,
            "properties": {"name": {"const": entry.name},
                           "params": {"type": "object", "properties": params, "additionalProperties": False}},
        }
    return {"NamedObjective": {"oneOf": [ref(name) for name in variants],
                               "description": "A catalog objective by name (GET /v1/objectives), with optional "
                                              "parameters; its formula is written in x, so 'variable' must be x"},
            **variants}


def _choice(table: dict[str, str], kind: str) -> dict[str, Any]:
    return {"type": "object", "required": ["name"], "additionalProperties": True,
            "properties": {"name": {"type": "string", "description": f"one of {', '.join(table)} "
                                    "(case and underscores do not matter)"}},
            "description": f"{{'name': the {kind}, ...keyword arguments of that torch class}}; the "
            f"arguments, their types and ranges: GET /v1/optimizers"}


def _put(schema: dict[str, Any], path: tuple[str, ...], **values: Any) -> None:
    """Set keywords on the property at ``path`` if the generated schema has it."""
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key)  # type: ignore[assignment]
        if not isinstance(node, dict):
            return
    node.update(values)


def _numeric_branch(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = schema
    for key in path:
        node = node.get("properties", {}).get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    if node.get("type") in ("integer", "number"):
        return node
    for branch in node.get("anyOf", []):
        if isinstance(branch, dict) and branch.get("type") in ("integer", "number"):
            return branch
    return None


def spec_schemas(limits: Limits) -> dict[str, Any]:
    """JobSpec and the models it refers to, with the configured limits written in."""
    raw = _standard(JobSpec.model_json_schema(ref_template=REF_TEMPLATE))
    schemas: dict[str, Any] = raw.pop("$defs", {})
    spec = raw
    schemas["JobSpec"] = spec

    props = spec.get("properties", {})
    if "objective" in props:
        props["objective"] = {
            "description": "An expression in x (or 'variable') such as '10 * (x ** 2).sum()' that gives "
                           "one number, or a catalog objective by name",
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": limits.max_expression_chars,
                       "pattern": STORABLE_TEXT,
                       "description": "An expression (max_expression_chars); see service/expr/parse.py"},
                      ref("NamedObjective")],
        }
        schemas.update(_named_objectives())
    if "x0" in props:
        props["x0"] = {
            "description": "The start: a nested list of numbers, or a generated start. Required (and not "
                           "null) for an expression objective; a catalog objective has a default start.",
            "anyOf": [ref("NestedNumbers"), ref("InitSpec"), {"type": "null"}], "default": None}
        schemas["NestedNumbers"] = _nested_x0()
    if "optimizer" in props:
        props["optimizer"] = {**_choice(OPTIMIZERS, "optimizer"), "default": {"name": "sgd", "lr": 0.001}}
    if "scheduler" in props:
        props["scheduler"] = {"anyOf": [_choice(SCHEDULERS, "learning-rate scheduler"), {"type": "null"}],
                              "default": None}
    _put(spec, ("steps",), maximum=limits.max_steps)
    name = props.get("name", {})
    for branch in name.get("anyOf", []):
        if branch.get("type") == "string":
            branch["pattern"] = STORABLE_TEXT
    spec["description"] = (
        "A descent job: minimise the objective over 'variable' from x0. No string anywhere in it (keys "
        f"too) may hold a NUL or a lone surrogate, and objects and lists nest at most {MAX_NESTING} levels "
        "(x0's numbers aside).")
    if "tags" in props:
        props["tags"] = {"type": "object", "maxProperties": limits.max_tags,
                         "propertyNames": {"maxLength": 64, "pattern": STORABLE_TEXT},
                         "additionalProperties": {"type": "string", "maxLength": 256, "pattern": STORABLE_TEXT},
                         "description": f"At most {limits.max_tags} tags; keys up to 64 and values up "
                                        "to 256 characters"}

    stop = schemas.get("StopSpec", {})
    branch = _numeric_branch(stop, ("max_seconds",))
    if branch is not None:
        branch["maximum"] = limits.max_seconds
    init = schemas.get("InitSpec", {})
    _put(init, ("shape",), items={"type": "integer", "minimum": 1, "maximum": limits.max_elements},
         description=f"Every dimension at least 1, at most max_elements ({limits.max_elements}) in all")

    # x0 is required for an expression objective (a catalog objective has a default start), and a
    # catalog objective's formula is written in x.
    spec["allOf"] = [
        {"if": {"required": ["objective"], "properties": {"objective": {"type": "string"}}},
         "then": {"required": ["x0"], "properties": {"x0": {"not": {"type": "null"}}}}},
        {"if": {"required": ["objective"], "properties": {"objective": {"type": "object"}}},
         "then": {"properties": {"variable": {"const": "x"}}}},
    ]
    return schemas


# The README's lesson, as request examples (Schemathesis's examples phase submits them).
SPEC_EXAMPLES = {
    "gradient": {"summary": "f(X) = 10 * sum(X**2): steps 0 give the gradient and the graph",
                 "value": {"objective": "10 * (x ** 2).sum()", "x0": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]],
                           "steps": 0}},
    "sgd": {"summary": "500 steps of torch.optim.SGD on prod(log(log(w + 7)))",
            "value": {"objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w", "x0": [[5, 10], [1, 2]],
                      "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}}},
    "catalog": {"summary": "A catalog objective with its default start, a scheduler and tags",
                "value": {"objective": {"name": "rosenbrock", "params": {"b": 100}}, "steps": 200,
                          "optimizer": {"name": "adam", "lr": 0.01},
                          "scheduler": {"name": "step_lr", "step_size": 50, "gamma": 0.5},
                          "record": {"every": 10}, "tags": {"lesson": "banana"}}},
}


# --- responses ------------------------------------------------------------------------------

# POST /v1/jobs with its tensors as .npy files (service.api.body).
UPLOAD = {
    "schema": {"type": "object", "required": ["spec"], "properties": {
        "spec": {"type": "string", "description": "The job spec as JSON (a JobSpec), without x0 when x0 is uploaded"},
        "x0": {"type": "string", "format": "binary", "description": "x0 as a .npy file of real numbers"}},
        "additionalProperties": {"type": "string", "format": "binary",
                                 "description": "data.NAME: a data tensor as a .npy file"}},
    "encoding": {"spec": {"contentType": "application/json"}, "x0": {"contentType": "application/x-npy"}},
}


# POST /v1/sweeps with its base's tensors as .npy files: the request as JSON in ``spec``.
SWEEP_UPLOAD = {**UPLOAD, "schema": {**UPLOAD["schema"], "properties": {
    **UPLOAD["schema"]["properties"],
    "spec": {"type": "string", "description": "The sweep request as JSON (a SweepRequest); x0 and data.NAME "
                                              "parts go into its base"}}}}


def response_schemas() -> dict[str, Any]:
    """The response models (``service.api.schemas``, which the handlers build their bodies with) as
    components: their JSON Schemas as pydantic generates them for serialization, each nested model
    and named type (Float, JobStatus) a component of its own. Two edits: a response does not say
    ``additionalProperties: false`` (a later version may add keys; a client should keep working), and
    a property carries no title pydantic made up from its name ("Created At" for created_at)."""
    _, top = models_json_schema([(model, "serialization") for model in RESPONSES], ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = top["$defs"]
    for schema in schemas.values():
        if schema.get("additionalProperties") is False:
            del schema["additionalProperties"]
        for name, prop in schema.get("properties", {}).items():
            if prop.get("title") == name.replace("_", " ").title():
                del prop["title"]
    return schemas


# --- sweeps -----------------------------------------------------------------------------------

SWEEP_SUMMARY_LIMIT = SUMMARY_LIMIT[:2]  # low, high (JOBS_LIMIT is the same)
SWEEP_LIST_LIMIT = SWEEPS_LIMIT[:2]
SWEEP_SORTS = SORTS
SWEEP_GRID_STATS = STATS


def _one_line(schema: dict[str, Any]) -> None:
    """A docstring as a description: its lines joined."""
    if isinstance(schema.get("description"), str):
        schema["description"] = " ".join(schema["description"].split())


def sweep_schemas(limits: Limits, spec: dict[str, Any]) -> dict[str, Any]:
    """SweepRequest, generated from the model ``plan_sweep`` validates requests with
    (``service.spec.sweep_request``), with the configured limits written in; its ``base`` is
    SweepBase: the job spec's schema (``spec``: the components ``spec_schemas`` made) as it is, property
    for property, with no key required, since the grid may set any of them and starts replace x0."""
    raw = _standard(SweepRequest.model_json_schema(ref_template=REF_TEMPLATE))
    schemas: dict[str, Any] = raw.pop("$defs", {})
    jobs = limits.max_sweep_jobs
    props = raw["properties"]
    raw["description"] = (f"{' '.join(raw.get('description', '').split())} At most {jobs} jobs in all "
                          f"(DESCENT_MAX_SWEEP_JOBS) and {MAX_GRID_COMBINATIONS} combinations of grid values, "
                          "else 413; the owner's quotas are checked from these sizes before anything is built "
                          "(429).")
    props["base"] = {**ref("SweepBase"), "description": props["base"].get("description", "")}
    props["grid"]["additionalProperties"]["maxItems"] = jobs
    for branch in props["starts"]["oneOf"]:
        if branch.get("type") == "array":  # explicit starts: each an x0
            branch.update(maxItems=jobs, items=ref("NestedNumbers"))
    random = schemas["RandomStarts"]
    _one_line(random)
    random["properties"]["count"]["maximum"] = jobs
    # The same rules as a job's own name and tags (the sweep's jobs carry the base's).
    job = spec["JobSpec"]["properties"]
    props["tags"] = copy.deepcopy(job["tags"])
    for branch in props["name"].get("anyOf", []):
        if branch.get("type") == "string":
            branch["pattern"] = STORABLE_TEXT
    schemas["SweepRequest"] = raw
    schemas["SweepBase"] = sweep_base(spec["JobSpec"])
    return schemas


def sweep_base(job_spec: dict[str, Any]) -> dict[str, Any]:
    """A sweep's base: JobSpec's properties as they are, with nothing required that a grid key
    may give: no key of the spec, and no name of the optimizer, scheduler or catalog objective
    (``optimizer.name``, ``scheduler.name`` and ``objective.name`` are grid keys)."""
    base = {key: copy.deepcopy(value) for key, value in job_spec.items()
            if key not in ("required", "allOf", "title", "description")}
    props = base["properties"]
    for choice in ("optimizer", "scheduler"):
        for branch in [props.get(choice, {}), *props.get(choice, {}).get("anyOf", [])]:
            branch.pop("required", None)
    if "anyOf" in props.get("objective", {}):
        props["objective"]["anyOf"].append({
            "type": "object", "not": {"required": ["name"]}, "additionalProperties": False,
            "properties": {"params": {"type": "object"}},
            "description": "A catalog objective's parameters alone: its name given by a grid key (objective.name)"})
    return {"title": "SweepBase", **base,
            "description": "A sweep's base: a job spec (JobSpec's properties, each as a job has it) with nothing "
                           "required that a grid key may give (any key of the spec, and the optimizer's, "
                           "scheduler's and catalog objective's name), and x0 replaced by starts when they are "
                           "given. The base with each combination of the grid's values must be a job spec, and "
                           "what the base says must be valid even where the grid replaces it."}


def idempotency_header(made: str, sent: str) -> dict[str, Any]:
    """The Idempotency-Key header of a submission that makes a ``made`` from a ``sent``."""
    return {"name": "Idempotency-Key", "in": "header", "required": False,
            "description": f"A retry with the same key and {sent} returns the first {made} (409 for another {sent})",
            "schema": {"type": "string", "minLength": IDEMPOTENCY_KEY_LENGTH[0], "maxLength": IDEMPOTENCY_KEY_LENGTH[1],
                       "not": {"pattern": "^" + SCOPED_KEY_PREFIX}}}


REPLAYED = {"description": "true when the Idempotency-Key was seen before", "required": False,
            "schema": {"type": "string", "enum": ["true"]}}


def sweep_paths(limits: Limits) -> dict[str, Any]:
    sweep = json_response(ref("Sweep"), "The sweep")
    sweep_id = {"name": "sweep_id", "in": "path", "required": True, "description": "A sweep's id",
                "schema": {"type": "string", "format": "uuid"}}
    page = [query("limit", int_range(*SWEEP_SUMMARY_LIMIT), "Items per page (default 100)"),
            query("cursor", {"type": "string"}, "next_cursor from the previous page")]
    return {
        "/v1/sweeps": {"get": {
            "operationId": "listSweeps", "summary": "List sweeps, newest first, a page at a time, with their counts",
            "description": "The caller's sweeps (an admin's: everyone's), each as POST /v1/sweeps answers it: its "
                           "jobs by status, and how many diverged.",
            "parameters": [query("limit", int_range(*SWEEP_LIST_LIMIT), "Sweeps per page (default 100)"),
                           query("cursor", {"type": "string"}, "next_cursor from the previous page")],
            "responses": {"200": {**json_response(ref("SweepPage"), "A page of sweeps, newest first"), "links": {
                "NextPage": {"operationId": "listSweeps", "description": "The next page",
                             "parameters": {"cursor": "$response.body#/next_cursor"}}}},
                          **errors(400, 401, 403, 503)}}, "post": {
            "operationId": "submitSweep", "summary": "Submit a sweep: many jobs from one base spec, a grid and starts",
            "parameters": [idempotency_header("sweep", "request")],
            "requestBody": {"required": True, "description": f"At most {limits.max_body_bytes} bytes (max_body_bytes)",
                            "content": {"application/json": {"schema": ref("SweepRequest"), "examples": SWEEP_EXAMPLES},
                                        "multipart/form-data": SWEEP_UPLOAD}},
            "responses": {
                "202": {**sweep, "description": "Accepted: every job stored and queued (or, with a known "
                                                "Idempotency-Key, the sweep it made)",
                        "headers": {"Location": {"description": "The sweep's URL", "required": True,
                                                 "schema": {"type": "string"}},
                                    "Idempotent-Replayed": REPLAYED},
                        "links": {"GetSweep": {"operationId": "getSweep", "parameters": {"sweep_id": "$response.body#/id"}}}},
                **errors(400, 401, 403, 409, 413, 415, 429, 503)}}},
        "/v1/sweeps/{sweep_id}": {"get": {
            "operationId": "getSweep", "summary": "A sweep: counts by status and a page of its summary",
            "parameters": [sweep_id,
                           query("sort", {"type": "string", "enum": list(SWEEP_SORTS)},
                                 "created: the sweep's order (default); f: ascending final f, unfinished last"),
                           *page],
            "responses": {"200": json_response(ref("SweepDetail"), "The sweep and a page of its summary"),
                          **errors(400, 401, 403, 404, 503)}}},
        "/v1/sweeps/{sweep_id}/jobs": {"get": {
            "operationId": "listSweepJobs", "summary": "A sweep's jobs in its order, a page at a time",
            "parameters": [sweep_id, *page],
            "responses": {"200": json_response(ref("JobPage"), "A page of the sweep's jobs"),
                          **errors(400, 401, 403, 404, 503)}}},
        "/v1/sweeps/{sweep_id}/grid": {"get": {
            "operationId": "getSweepGrid", "summary": "Final f of every job of a sweep over two of its grid keys",
            "description": "Computed in SQL over all the sweep's jobs: per cell (a value of the rows key and one of "
                           "the cols key), the stat of the finite final f of its succeeded jobs, its jobs, the jobs "
                           "the stat is over, and those that diverged (left out of the stat). Without cols, one "
                           "column; without rows and cols, one cell. A key that is not one of the sweep's grid "
                           "keys, or an unknown stat, is a 400 naming the parameter.",
            "parameters": [sweep_id,
                           query("rows", {"type": "string"}, "A grid key of the sweep (optimizer.lr, ...): its values "
                                                             "down the rows"),
                           query("cols", {"type": "string"}, "Another grid key: its values across the columns "
                                                             "(needs rows)"),
                           query("stat", {"type": "string", "enum": list(SWEEP_GRID_STATS), "default": "min"},
                                 "What a cell holds of its jobs' finite final f: min (default), median or mean")],
            "responses": {"200": json_response(ref("SweepGrid"), "The grid of final f"),
                          **errors(400, 401, 403, 404, 503)}}},
        "/v1/sweeps/{sweep_id}/cancel": {"post": {
            "operationId": "cancelSweep", "summary": "Cancel every queued or running job of a sweep",
            "parameters": [sweep_id],
            "responses": {"202": {**sweep, "description": "Queued jobs cancelled; running ones asked to stop"},
                          **errors(400, 401, 403, 404, 413, 415, 503)}}},
    }


SWEEP_EXAMPLES = {
    "optimisers_and_starts": {"summary": "2 optimisers x 2 learning rates x 5 random starts on Rosenbrock",
                              "value": {"base": {"objective": {"name": "rosenbrock"}, "steps": 500,
                                                 "record": {"every": 10}},
                                        "grid": {"optimizer.name": ["sgd", "adam"], "optimizer.lr": [0.001, 0.01]},
                                        "starts": {"count": 5, "init": "uniform", "low": -2, "high": 2, "seed": 0}}},
}


# --- the document ---------------------------------------------------------------------------

def document(limits: Limits | None = None, auth: str = "required") -> dict[str, Any]:
    """The OpenAPI document for a service configured with ``limits`` (the defaults if None) and
    ``auth`` (``required``: a bearer token on every operation but the open ones; ``off``: none)."""
    limits = limits or Limits()
    spec = spec_schemas(limits)
    schemas = {**spec, **response_schemas(), **sweep_schemas(limits, spec)}
    job = json_response(ref("Job"), "The job")
    job_id = {"name": "job_id", "in": "path", "required": True, "description": "A job's id",
              "schema": {"type": "string", "format": "uuid"}}
    follow = {
        "GetJob": {"operationId": "getJob", "parameters": {"job_id": "$response.body#/id"}},
        "GetHistory": {"operationId": "getHistory", "parameters": {"job_id": "$response.body#/id"}},
        "CancelJob": {"operationId": "cancelJob", "parameters": {"job_id": "$response.body#/id"}},
    }
    submitted = {
        **job, "description": "Accepted and queued (or, with a known Idempotency-Key, the job it made)",
        "headers": {
            "Location": {"description": "The job's URL", "required": True, "schema": {"type": "string"}},
            "Idempotent-Replayed": REPLAYED,
        },
        "links": follow,
    }
    paths = {
        "/v1/jobs": {
            "post": {
                "operationId": "submitJob", "summary": "Submit a job",
                "parameters": [idempotency_header("job", "spec")],
                "requestBody": {"required": True, "description": f"At most {limits.max_body_bytes} bytes "
                                "(max_body_bytes)",
                                "content": {"application/json": {"schema": ref("JobSpec"),
                                                                 "examples": SPEC_EXAMPLES},
                                            "multipart/form-data": UPLOAD}},
                "responses": {"202": submitted, **errors(400, 401, 403, 409, 413, 415, 429, 503)},
            },
            "get": {
                "operationId": "listJobs", "summary": "List jobs in creation order, a page at a time",
                "parameters": [
                    query("status", {"type": "string", "enum": [s.value for s in JobStatus]}, "Only jobs in this status"),
                    query("tag", {"type": "string", "pattern": "^[^:]*:"}, "key:value: only jobs with this tag"),
                    query("name", {"type": "string", "maxLength": NAME_CHARS, "pattern": STORABLE_TEXT},
                          "Only jobs with this name"),
                    query("stop_reason", {"type": "string", "enum": list(ENDED_BY)},
                          "Only finished jobs that ended for this reason (a diverged run is succeeded, "
                          "with stop_reason diverged)"),
                    query("created_after", _TIME, "Only jobs created at or after this time (UTC when no offset)"),
                    query("created_before", _TIME, "Only jobs created before this time (UTC when no offset)"),
                    query("order", {"type": "string", "enum": list(ORDERS), "default": "asc"},
                          "asc: oldest first (the default); desc: newest first"),
                    query("limit", int_range(*LIST_LIMIT), "Jobs per page (default 50)"),
                    query("cursor", {"type": "string"}, "next_cursor from the previous page"),
                ],
                "responses": {"200": {**json_response(ref("JobPage"), "A page of jobs"), "links": {"NextPage": {
                    "operationId": "listJobs", "description": "The next page",
                    "parameters": {"cursor": "$response.body#/next_cursor"}}}},
                              **errors(400, 401, 403, 503)},
            },
        },
        "/v1/jobs/{job_id}": {"get": {
            "operationId": "getJob", "summary": "One job",
            "parameters": [job_id, query("wait", {"type": "number", "minimum": WAIT_SECONDS[0],
                                                   "maximum": WAIT_SECONDS[1]},
                                         "Seconds to wait for the job to finish before answering; past "
                                         "DESCENT_MAX_WAITERS waiting requests it answers at once, with Retry-After"),
                           query("include", {"type": "string", "pattern": INCLUDE_PATTERN},
                                 "Comma-separated: data, the spec's data tensors with their values (by default "
                                 "each is {sha256, shape}, a reference to the stored tensor); x0: the same for "
                                 "an x0 of more than 10,000 numbers; x, grad: the "
                                 "result's, inline however big (by default one of more than "
                                 "DESCENT_INLINE_ELEMENTS elements is a TensorSummary)")],
            "responses": {"200": job, **errors(400, 401, 403, 404, 503)}}},
        "/v1/jobs/{job_id}/events": {"get": {
            "operationId": "jobEvents", "summary": "The job's changes as Server-Sent Events, until it ends",
            "parameters": [job_id, query("timeout", {"type": "number", "minimum": STREAM_SECONDS[0],
                                                      "maximum": STREAM_SECONDS[1]},
                                         f"Close the stream after this many seconds without an end event "
                                         f"(default {DEFAULT_STREAM_SECONDS}); the client reconnects")],
            "responses": {
                "200": {"description": "text/event-stream: event status (data: the Job) on open and on each "
                                       "change; event progress (data: the job's progress) about once a second "
                                       "while it runs; a ': heartbeat' comment when nothing else was sent for "
                                       "a while; event end (data: the Job) when it has finished, then the "
                                       "stream closes; event error if the stream cannot go on",
                        # OpenAPI 3.1: the schema of a text/event-stream is the schema of each event.
                        "content": {"text/event-stream": {"schema": {
                            "type": "object", "required": ["event", "data"],
                            "properties": {"event": {"enum": ["status", "progress", "end", "error"]},
                                           "data": {"type": "string", "contentMediaType": "application/json",
                                                    "description": "One line of JSON: the Job (status, end), "
                                                                   "its Progress, or an Error"}}}}}},
                **errors(400, 401, 403, 404, 503)}}},
        "/v1/jobs/{job_id}/cancel": {"post": {
            "operationId": "cancelJob", "summary": "Cancel a queued or running job", "parameters": [job_id],
            "responses": {"202": {**job, "description": "Cancelled, or cancellation requested"},
                          **errors(400, 401, 403, 404, 409, 413, 415, 503)}}},
        "/v1/jobs/{job_id}/history": {"get": {
            "operationId": "getHistory", "summary": "The per-step history, streamed",
            "parameters": [
                job_id,
                query("start", int_range(0, INT32_MAX), "First step (default 0)"),
                query("limit", int_range(*HISTORY_JSON_LIMIT),
                      f"Rows in a JSON page (default 1000, at most {HISTORY_JSON_LIMIT[1]}); CSV and NDJSON "
                      "stream every row unless it is set"),
                query("every", int_range(1, INT32_MAX), "Every k-th recorded row (default 1)"),
                query("points", int_range(1, MAX_POINTS),
                      "At most this many rows, spread evenly over the steps from start to the last "
                      "recorded step, always with the first and the last (points=1: the last only); "
                      "chosen among the multiples of every, at most limit of them; a JSON answer is one "
                      "page (next_start null)"),
                query("fields", {"type": "string", "pattern": r"^\s*(?:(?:" + "|".join(HISTORY_FIELDS)
                                  + r")?\s*(?:,\s*(?:" + "|".join(HISTORY_FIELDS) + r")?\s*)*)$"},
                      "Comma-separated: " + ",".join(HISTORY_FIELDS) + " (step is always included)"),
                query("format", {"type": "string", "enum": list(HISTORY_FORMATS), "default": "json"},
                      "json pages {rows, next_start}, CSV, or NDJSON", empty_is_default=False),
            ],
            "responses": {
                "200": {"description": "JSON {rows, next_start}, CSV (step,f,grad_norm,lr,x_0,...) or NDJSON",
                        "content": {"application/json": {"schema": ref("HistoryPage")},
                                    "text/csv": {"schema": {"type": "string"}},
                                    "application/x-ndjson": {"schema": {"type": "string"}}}},
                **errors(400, 401, 403, 404, 503)}}},
        **surface_paths(limits),
        **tensor_paths(),
        **workers_paths(),
        **metrics_paths(),
        **sweep_paths(limits),
        "/v1/objectives": {"get": {
            "operationId": "listObjectives", "summary": "The objective catalog",
            "responses": {"200": json_response(ref("ObjectiveCatalog"),
                                               "Objectives with formulas, parameters, default starts and minima"),
                          **errors(400, 401, 403, 503)}}},
        "/v1/optimizers": {"get": {
            "operationId": "listOptimizers", "summary": "Allowed optimisers and schedulers",
            "responses": {"200": json_response(ref("OptimizerCatalog"),
                                               "Optimisers and schedulers with their arguments and defaults"),
                          **errors(400, 401, 403, 503)}}},
        "/healthz": {"get": {
            "operationId": "healthz", "summary": "Liveness", "security": _PUBLIC,
            "responses": {"200": json_response(ref("Health"),
                                               "The process answers; requests waiting or streaming, and their bound"),
                          **errors(400, 403)}}},
        "/readyz": {"get": {
            "operationId": "readyz", "summary": "Database and broker reachable", "security": _PUBLIC,
            "responses": {
                "200": json_response(ref("Readiness"), "Ready"),
                "503": json_response(ref("Readiness"), "Not ready: checks says which part is down"),
                **errors(400, 403)}}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document", "security": _PUBLIC,
            "responses": {"200": json_response({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1"),
                          **errors(400, 403)}}},
    }
    for path, operations in deletion_paths().items():  # DELETE beside the GETs of the same paths
        paths[path].update(operations)
    if auth == "off":  # no request is refused for want of a token
        for operations in paths.values():
            for operation in operations.values():
                operation["responses"].pop("401", None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Descent", "version": "1",
                 "description": "Gradient-descent jobs over HTTP. Every error is JSON: "
                                "{\"error\": {\"code\", \"message\", \"field\"}}. A method a path does not "
                                "have is answered 405 with Allow."},
        "servers": [{"url": "/"}],
        # With DESCENT_AUTH=off (the default on a loopback bind) no operation needs a token.
        "security": [{"bearer": []}] if auth != "off" else [],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API token (descent tokens create --owner NAME). With DESCENT_AUTH=off "
                               "(the default on a loopback bind) no token is needed and every request acts "
                               "as admin."}},
        },
    }


@bp.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    settings = current_app.extensions["descent"].settings
    return document(settings.limits, current_app.config.get("DESCENT_AUTH", "required"))
