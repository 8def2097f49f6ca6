"""``SweepRequest`` in ``/openapi.json``: generated from the model ``plan_sweep`` validates with
(``service.spec.sweep_request``), its base the job spec's own schema (every property of JobSpec,
whatever JobSpec comes to hold, none required), the configured limits written in; and what the
schema refuses, the API refuses, naming the field (``scripts/fuzz.sh`` holds the live API to the
same document)."""
from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest

from service.api.openapi import document
from service.config import Limits
from service.spec.model import JobSpec
from service.spec.sweep_request import RandomStarts, SweepRequest
from tests.api.conftest import RecordingDispatcher
from tests.helpers.apps import embedded_client

ROSENBROCK = {"objective": {"name": "rosenbrock"}, "steps": 5}
GOOD = {"base": ROSENBROCK, "grid": {"optimizer.name": ["sgd", "adam"], "stop.grad_norm": [1e-6]},
        "starts": {"count": 2, "init": "uniform", "low": -2, "high": 2, "seed": 1}, "tolerance": 1e-3,
        "name": "good", "tags": {"who": "test"}}


def validator(doc: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for({"$ref": "#/components/schemas/SweepRequest", "components": doc["components"]})


def post(client, body: Any):  # type: ignore[no-untyped-def]
    return client.post("/v1/sweeps", data=json.dumps(body), content_type="application/json")


def test_the_request_schema_is_the_models():
    schemas = document()["components"]["schemas"]
    request = schemas["SweepRequest"]
    assert list(request["properties"]) == list(SweepRequest.model_fields)
    assert request["required"] == ["base"] and request["additionalProperties"] is False
    assert list(schemas["RandomStarts"]["properties"]) == list(RandomStarts.model_fields)
    assert schemas["RandomStarts"]["required"] == ["count"]
    assert request["properties"]["base"]["$ref"] == "#/components/schemas/SweepBase"


def test_the_base_is_the_job_specs_schema_with_nothing_required():
    schemas = document()["components"]["schemas"]
    base, spec = schemas["SweepBase"], schemas["JobSpec"]
    assert set(base["properties"]) == set(spec["properties"]) == set(JobSpec.model_fields)  # whatever JobSpec holds
    named = ("optimizer", "scheduler", "objective")  # whose name a grid key may give
    assert {k: v for k, v in base["properties"].items() if k not in named} == \
        {k: v for k, v in spec["properties"].items() if k not in named}
    assert base["additionalProperties"] is False and "required" not in base and "allOf" not in base
    assert "oneOf" in spec["properties"]["optimizer"]  # a job names its optimiser; a sweep's base may leave it to the grid
    assert base["properties"]["optimizer"]["anyOf"][-1]["not"] == {"required": ["name"]}


def test_the_limits_follow_the_configuration(tmp_path):
    limits = Limits(max_sweep_jobs=50, max_tags=3)
    with embedded_client(tmp_path, RecordingDispatcher(), limits=limits) as client:
        schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
        props = schemas["SweepRequest"]["properties"]
        assert props["grid"]["additionalProperties"]["maxItems"] == 50
        assert next(b for b in props["starts"]["oneOf"] if b.get("type") == "array")["maxItems"] == 50
        assert schemas["RandomStarts"]["properties"]["count"]["maximum"] == 50
        assert props["tags"]["maxProperties"] == 3 and "50 jobs" in schemas["SweepRequest"]["description"]
        assert post(client, {"base": ROSENBROCK, "starts": {"count": 50}}).status_code == 202
        assert post(client, {"base": ROSENBROCK, "starts": {"count": 51}}).status_code == 413
        assert post(client, {"base": ROSENBROCK, "tags": {"a": "1", "b": "2", "c": "3", "d": "4"}}).status_code == 400


def test_the_examples_and_a_full_request_are_valid_and_accepted(client):
    doc = client.get("/openapi.json").get_json()
    check = validator(doc)
    examples = doc["paths"]["/v1/sweeps"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for body in [GOOD, *(e["value"] for e in examples.values()),
                 {"base": {"objective": "(x ** 2).sum()"}, "starts": [[1, 2], [3, 4]], "grid": {"steps": [1, 2]}},
                 # what the grid gives, the base may leave out: a key, or the name of a choice
                 {"base": {"steps": 5}, "grid": {"objective": [{"name": "booth"}]}},
                 {"base": {**ROSENBROCK, "optimizer": {"lr": 0.01}}, "grid": {"optimizer.name": ["sgd", "adam"]}},
                 {"base": {"objective": {"params": {"b": 10}}}, "grid": {"objective.name": ["rosenbrock"]}},
                 {"base": {**ROSENBROCK, "scheduler": {"step_size": 2}}, "grid": {"scheduler.name": ["step_lr"]}}]:
        assert check.is_valid(body), body
        assert post(client, body).status_code == 202, body


BAD = [  # (request, the field the API names)
    ({"grid": {}}, "base"),
    ({"base": 1}, "base"),
    ({**GOOD, "colour": 1}, "colour"),
    ({**GOOD, "grid": {"x0": [[1, 2]]}}, "grid.x0"),
    ({**GOOD, "grid": {"steps\n": [1]}}, "grid.steps\n"),
    ({**GOOD, "grid": {"optimizer.lr.x": [1]}}, "grid.optimizer.lr.x"),
    ({**GOOD, "grid": {"steps": []}}, "grid.steps"),
    ({**GOOD, "grid": {"steps": 5}}, "grid.steps"),
    ({**GOOD, "grid": {f"optimizer.a{i}": [1] for i in range(33)}}, "grid"),
    ({**GOOD, "starts": []}, "starts"),
    ({**GOOD, "starts": "many"}, "starts"),
    ({**GOOD, "starts": [[]]}, "starts.0"),
    ({**GOOD, "starts": [[1, 2], "x"]}, "starts.1"),
    ({**GOOD, "starts": {"count": 0}}, "starts.count"),
    ({**GOOD, "starts": {"count": 1.5}}, "starts.count"),
    ({**GOOD, "starts": {"count": 2, "init": "zeros"}}, "starts.init"),
    ({**GOOD, "starts": {"count": 2, "std": 0}}, "starts.std"),
    ({**GOOD, "starts": {"count": 2, "mean": 1e13}}, "starts.mean"),
    ({**GOOD, "starts": {"count": 2, "seed": -1}}, "starts.seed"),
    ({**GOOD, "starts": {"count": 2, "colour": 1}}, "starts.colour"),
    ({**GOOD, "tolerance": -1}, "tolerance"),
    ({**GOOD, "tolerance": "small"}, "tolerance"),
    ({**GOOD, "name": "n" * 201}, "name"),
    ({**GOOD, "name": "a\x00b"}, "name"),
    ({**GOOD, "tags": {"k" * 65: "v"}}, "tags"),
    ({**GOOD, "tags": {"k": "v" * 257}}, "tags"),
    ({**GOOD, "tags": {f"k{i}": "v" for i in range(33)}}, "tags"),
    # The base is a job spec: what it says is checked even where the grid or the starts replace it.
    ({**GOOD, "base": {**ROSENBROCK, "colour": 1}}, "base.colour"),
    ({**GOOD, "base": {**ROSENBROCK, "steps": -1}, "grid": {"steps": [5]}}, "base.steps"),
    ({**GOOD, "base": {**ROSENBROCK, "dtype": "float16"}, "grid": {"dtype": ["float32"]}}, "base.dtype"),
    ({**GOOD, "base": {**ROSENBROCK, "record": {"every": 0}}, "grid": {"record.every": [1]}}, "base.record.every"),
    ({**GOOD, "base": {**ROSENBROCK, "stop": {"max_seconds": 0}}, "grid": {"stop.max_seconds": [1]}},
     "base.stop.max_seconds"),
    ({**GOOD, "base": {**ROSENBROCK, "variable": "1x"}, "grid": {"variable": ["x"]}}, "base.variable"),
    ({**GOOD, "base": {**ROSENBROCK, "x0": [[1, 2], []]}, "starts": [[1, 2]]}, "base.x0"),
    ({**GOOD, "base": {**ROSENBROCK, "x0": "here"}, "starts": [[1, 2]]}, "base.x0"),
    ({**GOOD, "base": {**ROSENBROCK, "objective": {"name": "nope"}}, "grid": {"objective": [{"name": "booth"}]}},
     "base.objective.name"),
]


@pytest.mark.slow
@pytest.mark.parametrize("body, field", BAD, ids=[field for _, field in BAD])
def test_what_the_schema_refuses_the_api_refuses_naming_the_field(client, body, field):
    doc = client.get("/openapi.json").get_json()
    assert not validator(doc).is_valid(body), body
    resp = post(client, body)
    assert resp.status_code in (400, 413) and resp.get_json()["error"]["field"] == field, resp.get_json()
