"""The component schemas of ``/openapi.json``: the job spec, the sweep request and the responses.

The job spec's schema is generated from the same pydantic models that validate submissions, and
the sweep request's from the model ``plan_sweep`` validates with (``service.spec.sweep_request``;
its base is the job spec's schema, nothing required), then the configured limits
(``settings.limits``) are written into them, so the document always matches the running service.
Every JSON response is described by the pydantic model its handler builds it with
(``service.api.schemas``), generated the same way.

What a schema cannot say, and the handlers check: an objective expression must parse and give one
number on x0's shape; x0 must be rectangular with at most ``max_elements`` numbers in all; a job
may record at most ``max_recorded_values`` values; torch must accept an optimiser's arguments
(``line_search_fn``'s names, ``betas`` below 1).

A leaf of the API: it imports no blueprint (they take their examples and upload forms from it).
"""
from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema

from service.api.openapi_parts import REF_TEMPLATE, ref
from service.api.params import STORABLE_TEXT
from service.api.schemas import RESPONSES
from service.config import Limits
from service.status import JobStatus
from service.spec.model import JobSpec
from service.spec.sweep_request import SweepRequest
from service.spec.sweep import MAX_GRID_COMBINATIONS
from service.spec.values import MAX_MAGNITUDE


# --- the job spec ---------------------------------------------------------------------------

_PYDANTIC_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _standard(node: Any) -> Any:
    """pydantic's JSON Schema, made standard: a numeric bound on an optional number comes out as
    pydantic's own keyword (``ge``) next to an ``anyOf``; move it onto the numeric branches. And
    ``integer or number`` (the model's ``Number``, finite and within MAX_MAGNITUDE, a bound its
    validator enforces and pydantic cannot show), alone or among other branches, becomes one
    bounded ``number``."""
    if isinstance(node, list):
        return [_standard(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _standard(v) for k, v in node.items()}
    bounds = {_PYDANTIC_BOUNDS[k]: node.pop(k) for k in list(node) if k in _PYDANTIC_BOUNDS}
    branches = node.get("anyOf")
    if isinstance(branches, list):
        plain = [b for b in branches if b in ({"type": "integer"}, {"type": "number"})]
        if len(plain) == 2 and plain[0] != plain[1]:
            number = {"type": "number", "minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}
            rest = [b for b in branches if b not in plain]
            if rest:
                node["anyOf"] = [number, *rest]
            else:
                del node["anyOf"]
                node.update(number)
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
    """JobSpec and the models it refers to, as the models generate them, with the limits that
    depend on settings written in: max_expression_chars, max_steps, max_tags, max_seconds and
    max_elements."""
    raw = _standard(JobSpec.model_json_schema(ref_template=REF_TEMPLATE))
    schemas: dict[str, Any] = raw.pop("$defs", {})
    schemas["JobSpec"] = spec = raw
    props = spec["properties"]
    for branch in props["objective"]["anyOf"]:
        if branch.get("type") == "string":
            branch["maxLength"] = limits.max_expression_chars
    _put(spec, ("steps",), maximum=limits.max_steps)
    props["tags"]["maxProperties"] = limits.max_tags
    props["tags"]["description"] = props["tags"]["description"].replace("max_tags", str(limits.max_tags))
    branch = _numeric_branch(schemas["StopSpec"], ("max_seconds",))
    if branch is not None:
        branch["maximum"] = limits.max_seconds
    shape = schemas["InitSpec"]["properties"]["shape"]
    shape["items"]["maximum"] = limits.max_elements
    shape["description"] = shape["description"].replace("max_elements", f"max_elements ({limits.max_elements})")
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
    a property carries no title pydantic made up from its name ("Created At" for created_at). And
    JobStatus says which statuses are finished (``x-finished``: the dashboard reads it)."""
    _, top = models_json_schema([(model, "serialization") for model in RESPONSES], ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = top["$defs"]
    for schema in schemas.values():
        if schema.get("additionalProperties") is False:
            del schema["additionalProperties"]
        for name, prop in schema.get("properties", {}).items():
            if prop.get("title") == name.replace("_", " ").title():
                del prop["title"]
    schemas["JobStatus"]["x-finished"] = [status.value for status in JobStatus if status.is_finished]
    return schemas


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
        prop = props[choice]
        alone = {"type": "object", "not": {"required": ["name"]},
                 "description": f"The {choice}'s arguments alone: its name given by a grid key ({choice}.name)"}
        if "anyOf" in prop:
            prop["anyOf"].append(alone)
        else:
            union = {key: prop.pop(key) for key in ("oneOf", "discriminator") if key in prop}
            props[choice] = {"anyOf": [union, alone], **prop}
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


SWEEP_EXAMPLES = {
    "optimisers_and_starts": {"summary": "2 optimisers x 2 learning rates x 5 random starts on Rosenbrock",
                              "value": {"base": {"objective": {"name": "rosenbrock"}, "steps": 500,
                                                 "record": {"every": 10}},
                                        "grid": {"optimizer.name": ["sgd", "adam"], "optimizer.lr": [0.001, 0.01]},
                                        "starts": {"count": 5, "init": "uniform", "low": -2, "high": 2, "seed": 0}}},
}


def schemas(limits: Limits) -> dict[str, Any]:
    """Every component schema, for the configured ``limits``."""
    spec = spec_schemas(limits)
    return {**spec, **response_schemas(), **sweep_schemas(limits, spec)}
