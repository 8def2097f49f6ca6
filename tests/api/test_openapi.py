"""``/openapi.json``: a valid OpenAPI 3.1 document that lists every route and states the bounds the
handlers enforce, checked here against the app itself (``scripts/fuzz.sh`` checks it live; the
numeric bounds of every declared parameter are held in ``test_operations.py``)."""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest

from service.api.openapi import document
from service.config import Limits
from service.spec.optimizers import OPTIMIZERS, SCHEDULERS
from service.status import JobStatus
from tests.api.conftest import RecordingDispatcher
from tests.helpers.apps import embedded_client
from tests.helpers.lesson import LESSON_LOGLOG

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SCHEMA_KEYWORDS_WITH_SCHEMAS = ("items", "additionalProperties", "propertyNames", "not", "if", "then", "else")


@pytest.fixture
def doc(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = client.get("/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    return resp.get_json()


def operations(doc: dict[str, Any]):  # type: ignore[no-untyped-def]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def param(doc: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    found = [p for p in doc["paths"][path][method].get("parameters", []) if p["name"] == name]
    assert len(found) == 1, f"{method.upper()} {path} documents {name!r} {len(found)} times"
    return found[0]


def submit(client, spec: dict[str, Any], **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json", headers=headers)


def refused(resp, field: str) -> bool:  # type: ignore[no-untyped-def]
    """A 400 that names ``field``."""
    return resp.status_code == 400 and (resp.get_json() or {}).get("error", {}).get("field") == field


@pytest.fixture
def finished_job(client) -> str:  # type: ignore[no-untyped-def]
    """A job that has finished (cancelled while queued), so ``?wait`` answers at once."""
    job_id = submit(client, LESSON_LOGLOG).get_json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    return job_id


# --- the document is OpenAPI 3.1 ------------------------------------------------------------

def test_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"] == "3.1.0"
    try:  # Schemathesis (the `test` extra) ships the OpenAPI 3.1 meta-schema
        from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
    except ImportError:  # pragma: no cover - the structural checks below still run
        OPENAPI_31_VALIDATOR = None
    if OPENAPI_31_VALIDATOR is not None:
        errors = [f"{e.instance_path}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(doc)]
        assert errors == []
    assert {"title", "version"} <= set(doc["info"])
    for path, method, operation in operations(doc):
        assert path.startswith("/") and operation["responses"], (method, path)
        assert operation["operationId"] and operation["summary"]
        templated = set(re.findall(r"{(\w+)}", path))
        in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert templated == in_path, (method, path)
        for p in operation.get("parameters", []):
            assert p["in"] in ("query", "header", "path") and "schema" in p
            assert p["in"] != "path" or p["required"] is True
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("auth", ["off", "required"])
def test_openapi_spec_validator_finds_no_error(auth):
    from openapi_spec_validator import OpenAPIV31SpecValidator

    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in OpenAPIV31SpecValidator(document(auth=auth)).iter_errors()]
    assert errors == []


def test_every_schema_is_valid_json_schema_2020_12_and_every_ref_resolves(doc):
    components = doc["components"]["schemas"]
    for name, schema in components.items():
        jsonschema_rs.meta.validate(schema)  # raises naming the keyword at fault
        # compiles (patterns included) with the components it refers to
        jsonschema_rs.validator_for({**schema, "components": doc["components"]})
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs and set(refs) <= set(components)


def test_the_request_examples_are_valid_specs_the_api_accepts(doc, client):
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    validator = jsonschema_rs.validator_for({"$ref": "#/components/schemas/JobSpec", "components": doc["components"]})
    assert body["examples"]
    for name, example in body["examples"].items():
        validator.validate(example["value"])
        resp = submit(client, example["value"])
        assert resp.status_code == 202, (name, resp.get_json())
        # and the job the API returns conforms to the Job schema
        jsonschema_rs.validator_for({"$ref": "#/components/schemas/JobView", "components": doc["components"]}).validate(
            resp.get_json())


def test_schema_refuses_what_the_api_refuses(doc):
    validator = jsonschema_rs.validator_for({"$ref": "#/components/schemas/JobSpec", "components": doc["components"]})
    ok = {"objective": "x.sum()", "x0": [1.0, 2.0]}
    assert validator.is_valid(ok)
    assert validator.is_valid({"objective": {"name": "rosenbrock", "params": {"b": 10}}})
    for bad in (
        {"objective": "x.sum()"},                                    # x0 is required for an expression
        {"objective": "x.sum()", "x0": None},
        {"objective": {"name": "rosenbrock"}, "variable": "w"},      # catalog formulas are in x
        {"objective": {"name": "no_such_objective"}},
        {"objective": {"name": "rosenbrock", "params": {"zz": 1}}},
        {"objective": {"name": "rosenbrock", "params": {"b": 2e6}}},
        {**ok, "x0": []}, {**ok, "x0": [[]]}, {**ok, "x0": [True]}, {**ok, "x0": [1e13]},
        {**ok, "x0": 1.0}, {**ok, "x0": {"shape": [0]}}, {**ok, "x0": {"shape": [1] * 9}},
        {**ok, "steps": -1}, {**ok, "steps": Limits().max_steps + 1}, {**ok, "seed": -1},
        {**ok, "stop": {"max_seconds": 0}}, {**ok, "stop": {"max_seconds": Limits().max_seconds + 1}},
        {**ok, "stop": {"grad_norm": -1}}, {**ok, "record": {"every": 0}},
        {**ok, "tags": {f"k{i}": "v" for i in range(Limits().max_tags + 1)}},
        {**ok, "tags": {"k" * 65: "v"}}, {**ok, "tags": {"k": "v" * 257}}, {**ok, "name": "n" * 201},
        {**ok, "objective": "x" * (Limits().max_expression_chars + 1)}, {**ok, "objective": "x.sum()\x00"},
        {**ok, "optimizer": {}}, {**ok, "optimizer": {"name": 1}}, {**ok, "scheduler": {"step_size": 1}},
        {**ok, "optimizer": {"name": "sgd", "lr": -1}}, {**ok, "optimizer": {"name": "sgd", "speed": 2}},
        {**ok, "optimizer": {"name": "adam", "betas": [0.9]}}, {**ok, "optimizer": {"name": "lbfgs", "max_iter": 1.5}},
        {**ok, "optimizer": {"name": "no_such_optimizer"}}, {**ok, "scheduler": {"name": "step_lr"}},
        {**ok, "scheduler": {"name": "multi_step_lr", "milestones": [1] * 1001}},
        {**ok, "device": "tpu"}, {**ok, "dtype": "float16"}, {**ok, "unknown": 1},
    ):
        assert not validator.is_valid(bad), bad


def test_optimizers_and_schedulers_are_one_component_each(doc):
    schemas = doc["components"]["schemas"]
    spec = schemas["JobSpec"]["properties"]
    scheduler = next(b for b in spec["scheduler"]["anyOf"] if "oneOf" in b)
    for union, table, prefix in ((spec["optimizer"], OPTIMIZERS, "Optimizer"), (scheduler, SCHEDULERS, "Scheduler")):
        assert [b["$ref"].rsplit("/", 1)[1] for b in union["oneOf"]] == [f"{prefix}_{name}" for name in table]
        assert union["discriminator"]["propertyName"] == "name"
    assert schemas["Scheduler_step_lr"]["required"] == ["name", "step_size"]
    validator = jsonschema_rs.validator_for({"$ref": "#/components/schemas/JobSpec", "components": doc["components"]})
    ok = {"objective": "x.sum()", "x0": [1.0, 2.0]}
    for good in ({"name": "adam", "lr": 0.01, "betas": [0.8, 0.9]}, {"name": "lbfgs", "max_iter": 3.0},
                 {"name": "lbfgs", "line_search_fn": "strong_wolfe"}):
        assert validator.is_valid({**ok, "optimizer": good}), good


# --- every route is documented --------------------------------------------------------------

def test_every_route_is_documented_and_every_documented_operation_is_a_route(app, doc):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):
            continue  # the dashboard's pages and files are not API operations
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, method, _ in operations(doc)}
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "documented operations with no route"


def test_security_bearer_with_health_and_the_document_open(guarded):
    client, _ = guarded
    doc = client.get("/openapi.json").get_json()
    assert doc["components"]["securitySchemes"]["bearer"] == {**doc["components"]["securitySchemes"]["bearer"],
                                                              "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    for path, method, operation in operations(doc):
        open_ = operation.get("security") == []
        assert open_ == (path in ("/healthz", "/readyz", "/openapi.json")), path
        resp = client.open(path.replace("{job_id}", "00000000-0000-4000-8000-000000000000"), method=method.upper())
        if open_:
            assert resp.status_code != 401, path
        else:
            assert resp.status_code == 401 and "401" in operation["responses"], path
            assert "WWW-Authenticate" in resp.headers


def test_with_auth_off_no_operation_needs_a_token(doc):
    # the `app` fixture binds loopback with no DESCENT_AUTH: auth is off, and the document says so
    assert doc["security"] == []
    assert all("401" not in op["responses"] for _, _, op in operations(doc))


def test_errors_use_the_error_schema_and_statuses_are_documented(doc):
    expected = {
        ("/v1/jobs", "post"): {"202", "400", "403", "409", "413", "415", "429", "503"},
        ("/v1/jobs", "get"): {"200", "400", "403", "503"},
        ("/v1/jobs/{job_id}", "get"): {"200", "400", "403", "404", "503"},
        ("/v1/jobs/{job_id}/cancel", "post"): {"202", "400", "403", "404", "409", "413", "415", "503"},
        ("/v1/jobs/{job_id}/history", "get"): {"200", "400", "403", "404", "503"},
    }
    for path, method, operation in operations(doc):
        statuses = set(operation["responses"])
        assert expected.get((path, method), set()) <= statuses, (method, path)
        for status, response in operation["responses"].items():
            if status.startswith("4") or (status == "503" and path != "/readyz"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    assert doc["paths"]["/v1/jobs"]["post"]["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert doc["paths"]["/v1/jobs"]["post"]["responses"]["202"]["headers"]["Location"]["required"] is True


# --- the bounds in the document are the bounds the handlers enforce -------------------------

def test_query_enums_and_patterns(doc, client, finished_job):
    status = param(doc, "/v1/jobs", "get", "status")["schema"]
    assert status["enum"] == [s.value for s in JobStatus]
    for value in status["enum"]:
        assert client.get(f"/v1/jobs?status={value}").status_code == 200
    assert refused(client.get("/v1/jobs?status=QUEUED"), "status")

    tag = re.compile(param(doc, "/v1/jobs", "get", "tag")["schema"]["pattern"])
    for value, ok in (("k:v", True), (":v", True), ("k:", True), ("k:v:w", True), ("kv", False)):
        assert bool(tag.search(value)) is ok
        resp = client.get(f"/v1/jobs?tag={value}")
        assert (resp.status_code == 200) is ok and (ok or refused(resp, "tag")), value

    formats = param(doc, "/v1/jobs/{job_id}/history", "get", "format")["schema"]["enum"]
    assert formats == ["json", "csv", "ndjson"]
    history = f"/v1/jobs/{finished_job}/history"
    for value in formats:
        assert client.get(f"{history}?format={value}").status_code == 200
    for value in ("xml", "JSON", ""):
        assert refused(client.get(f"{history}?format={value}"), "format"), value

    fields = re.compile(param(doc, "/v1/jobs/{job_id}/history", "get", "fields")["schema"]["pattern"])
    for value, ok in (("step,f", True), (" x , grad ", True), ("f,,lr", True), ("", True), ("nope", False),
                      ("f,nope", False), ("stepf", False)):
        assert bool(fields.search(value)) is ok, value
        resp = client.get(f"{history}?fields={value}")
        assert (resp.status_code == 200) is ok and (ok or refused(resp, "fields")), value


def test_idempotency_key_length(doc, client):
    schema = param(doc, "/v1/jobs", "post", "Idempotency-Key")["schema"]
    assert (schema["minLength"], schema["maxLength"]) == (1, 200)
    assert submit(client, LESSON_LOGLOG, **{"Idempotency-Key": "k" * 200}).status_code == 202
    assert submit(client, LESSON_LOGLOG, **{"Idempotency-Key": "a"}).status_code == 202
    assert refused(submit(client, LESSON_LOGLOG, **{"Idempotency-Key": "k" * 201}), "Idempotency-Key")
    assert refused(submit(client, LESSON_LOGLOG, **{"Idempotency-Key": ""}), "Idempotency-Key")


def test_spec_bounds_follow_the_configured_limits(tmp_path):
    limits = Limits(max_steps=500, max_seconds=60.0, max_expression_chars=100, max_elements=1000)
    with embedded_client(tmp_path, RecordingDispatcher(), limits=limits) as client:
        schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
        spec = schemas["JobSpec"]["properties"]
        assert spec["steps"]["maximum"] == 500
        assert spec["objective"]["anyOf"][0]["maxLength"] == 100
        max_seconds = next(b for b in schemas["StopSpec"]["properties"]["max_seconds"]["anyOf"] if b.get("type") == "number")
        assert max_seconds["maximum"] == 60.0 and max_seconds["exclusiveMinimum"] == 0
        assert schemas["InitSpec"]["properties"]["shape"]["items"]["maximum"] == 1000

        base = {"objective": "x.sum()", "x0": [1.0, 2.0]}
        assert submit(client, {**base, "steps": 500}).status_code == 202
        assert submit(client, {**base, "steps": 501}).status_code == 400
        assert submit(client, {**base, "stop": {"max_seconds": 60}}).status_code == 202
        assert submit(client, {**base, "stop": {"max_seconds": 60.5}}).status_code == 400
        assert submit(client, {**base, "stop": {"max_seconds": 0}}).status_code == 400
        assert submit(client, {**base, "objective": "x.sum()" + " " * 93}).status_code == 202
        assert submit(client, {**base, "objective": "x.sum()" + " " * 94}).status_code == 400
        assert submit(client, {**base, "x0": {"shape": [1000]}}).status_code == 202
        assert submit(client, {**base, "x0": {"shape": [1001]}}).status_code in (400, 413)


def test_document_without_an_app_uses_the_default_limits():
    assert document()["components"]["schemas"]["JobSpec"]["properties"]["steps"]["maximum"] == Limits().max_steps
