"""Bad input: the right 4xx, the field named, and no job row left behind."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from service.errors import ErrorCode
from service.store.models import Job

GOOD = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 10}

CASES = [
    # (name, body bytes or spec dict, content type, status, field)
    ("empty body", b"", "application/json", 400, None),
    ("not json", b"steps=10", "application/json", 400, None),
    ("truncated json", b'{"objective": "x.sum()"', "application/json", 400, None),
    ("not utf-8", b'\xff\xfe{"a": 1}', "application/json", 400, None),
    ("json array", [1, 2], "application/json", 400, None),
    ("json string", "hello", "application/json", 400, None),
    ("unknown field", {**GOOD, "stepz": 10}, "application/json", 400, "stepz"),
    ("steps as string", {**GOOD, "steps": "10"}, "application/json", 400, "steps"),
    ("negative steps", {**GOOD, "steps": -5}, "application/json", 400, "steps"),
    ("too many steps", {**GOOD, "steps": 10**9}, "application/json", 400, "steps"),
    ("NaN in x0", b'{"objective": "x.sum()", "x0": [NaN, 1], "steps": 1}', "application/json", 400, "x0"),
    ("Infinity in x0", b'{"objective": "x.sum()", "x0": [Infinity, 1], "steps": 1}', "application/json", 400, "x0"),
    ("ragged x0", {**GOOD, "x0": [[1, 2], [3]]}, "application/json", 400, "x0"),
    ("string in x0", {**GOOD, "x0": [1, "2"]}, "application/json", 400, "x0"),
    ("missing x0", {"objective": "x.sum()", "steps": 1}, "application/json", 400, "x0"),
    ("huge x0 shape", {**GOOD, "x0": {"shape": [100000, 100000]}}, "application/json", 413, "x0.shape"),
    ("hostile expression", {**GOOD, "objective": "__import__('os').system('id')"}, "application/json", 400, "objective"),
    ("dunder attribute", {**GOOD, "objective": "x.__class__"}, "application/json", 400, "objective"),
    ("huge exponent", {**GOOD, "objective": "(x ** 10**10).sum()"}, "application/json", 400, "objective"),
    ("non-scalar objective", {**GOOD, "objective": "x ** 2"}, "application/json", 400, "objective"),
    ("unknown optimizer", {**GOOD, "optimizer": {"name": "magic"}}, "application/json", 400, "optimizer.name"),
    ("unknown optimizer argument", {**GOOD, "optimizer": {"name": "sgd", "lr": 0.1, "speed": 2}}, "application/json", 400, "optimizer.speed"),
    ("negative learning rate", {**GOOD, "optimizer": {"name": "adam", "lr": -0.1}}, "application/json", 400, "optimizer.lr"),
    ("bad betas", {**GOOD, "optimizer": {"name": "adam", "betas": [0.9, 2]}}, "application/json", 400, "optimizer"),
    ("scheduler missing argument", {**GOOD, "scheduler": {"name": "step_lr"}}, "application/json", 400, "scheduler.step_size"),
    ("bad device", {**GOOD, "device": "tpu"}, "application/json", 400, "device"),
    ("bad dtype", {**GOOD, "dtype": "int8"}, "application/json", 400, "dtype"),
    ("record every zero", {**GOOD, "record": {"every": 0}}, "application/json", 400, "record.every"),
    ("recording too much", {**GOOD, "x0": {"shape": [1000]}, "steps": 1_000_000}, "application/json", 413, "record"),
    ("unknown catalog objective", {"objective": {"name": "nope"}}, "application/json", 400, "objective.name"),
    ("tags not strings", {**GOOD, "tags": {"a": 1}}, "application/json", 400, "tags.a"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, None),
    ("integer of 5,000 digits", b'{"objective": "x.sum()", "x0": [1], "steps": ' + b"9" * 5000 + b"}",
     "application/json", 400, None),
    ("integer of 5,000 digits in a tag", b'{"objective": "x.sum()", "x0": [1], "tags": {"a": ' + b"1" * 5000 + b"}}",
     "application/json", 400, None),
    ("NaN in x0.mean", b'{"objective": "x.sum()", "x0": {"shape": [2], "mean": NaN}}', "application/json", 400, "x0.mean"),
    ("NUL in name", {**GOOD, "name": "a\x00b"}, "application/json", 400, "name"),
]


def _count(app) -> int:
    with app.extensions["descent"].db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


@pytest.mark.parametrize("name,body,ctype,status,field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_field(client, app, name, body, ctype, status, field):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = client.post("/v1/jobs", data=data, content_type=ctype)
    assert resp.status_code == status, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["code"] in set(ErrorCode) and len(err["message"]) > 10
    assert err["field"] == field, err
    assert _count(app) == 0


def test_oversize_body_is_413(client, app):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    resp = client.post("/v1/jobs", data=b"{" + b" " * 2000 + b"}", content_type="application/json")
    assert resp.status_code == 413 and "max_body_bytes" in resp.get_json()["error"]["message"]
    assert _count(app) == 0


def test_unknown_job_and_route_are_json_404(client):
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/history", "/v1/nothing"):
        resp = client.get(path)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"]


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=abc", "limit"), ("status=done", "status"),
                                         ("cursor=%%%", "cursor"), ("tag=nocolon", "tag")])
def test_bad_list_parameters(client, query, field):
    resp = client.get(f"/v1/jobs?{query}")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field


@pytest.mark.parametrize("query,field", [("format=xml", "format"), ("every=0", "every"), ("fields=x,zz", "fields"),
                                         ("start=-1", "start")])
def test_bad_history_parameters(client, query, field):
    job_id = client.post("/v1/jobs", data=json.dumps(GOOD), content_type="application/json").get_json()["id"]
    resp = client.get(f"/v1/jobs/{job_id}/history?{query}")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field


@pytest.mark.parametrize("value", ["abc", "-1", "31", "nan", "inf"])
def test_bad_wait_is_refused_with_its_limits(client, value):
    job_id = client.post("/v1/jobs", data=json.dumps(GOOD), content_type="application/json").get_json()["id"]
    resp = client.get(f"/v1/jobs/{job_id}?wait={value}")
    error = resp.get_json()["error"]
    assert resp.status_code == 400 and error["field"] == "wait" and "0 to 30" in error["message"]


@pytest.mark.parametrize("spec,code", [
    ({**GOOD, "optimizer": {"name": "magic"}}, "invalid_optimizer"),
    ({**GOOD, "scheduler": {"name": "step_lr"}}, "invalid_scheduler"),
    ({**GOOD, "scheduler": {"name": "step_lr", "step_size": 0}}, "invalid_scheduler"),
    ({**GOOD, "objective": "x ** 2"}, "invalid_expression"),
    ({**GOOD, "steps": 10**9}, "limit_exceeded"),
])
def test_each_refusal_carries_the_code_of_what_was_refused(client, spec, code):
    resp = client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == code


def test_a_stored_non_finite_number_is_still_answered_as_valid_json(client, app):
    """A job stored before non-finite numbers were refused (its spec holds NaN) must not break
    GET /v1/jobs for strict clients."""
    from sqlalchemy import update

    from tests.helpers.lesson import LESSON_LOGLOG

    job = client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json").get_json()
    with app.extensions["descent"].db.session() as s:
        s.execute(update(Job).where(Job.id == job["id"]).values(
            spec={**job["spec"], "x0": {"shape": [2], "mean": float("nan"), "std": float("inf")}}))
    for path in ("/v1/jobs", f"/v1/jobs/{job['id']}"):
        text = client.get(path).get_data(as_text=True)
        json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in {path}"))
        assert '"NaN"' in text and '"Infinity"' in text
