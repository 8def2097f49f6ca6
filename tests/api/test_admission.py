"""Big bodies are admitted in a process of their own (``service.api.admission``): the same job,
and the same refusals naming the same field, as a small body checked on the request thread."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from service.api.admission import BIG_BODY
from service.store import data


@pytest.mark.slow
def test_a_big_body_is_checked_in_a_process_and_stored_as_a_small_one_would_be(client, app):
    x0 = np.random.default_rng(1).normal(size=150_000)
    spec = {"objective": "(x ** 2).sum()", "x0": x0.tolist(), "steps": 1, "optimizer": {"name": "sgd", "lr": 0.1}}
    body = json.dumps(spec).encode()
    assert len(body) > BIG_BODY
    resp = client.post("/v1/jobs", data=body, content_type="application/json")
    assert resp.status_code == 202, resp.get_json()
    assert app.extensions["descent"].admissions._pool is not None  # it went through the pool
    job = resp.get_json()
    assert data.is_reference(job["spec"]["x0"]) and job["spec"]["x0"]["shape"] == [150_000]
    assert np.load(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/x0").data)).tobytes() == x0.tobytes()

    bad = json.dumps({**spec, "x0": [*x0.tolist()[:-1], "one"]}).encode()
    resp = client.post("/v1/jobs", data=bad, content_type="application/json")
    small = client.post("/v1/jobs", data=json.dumps({**spec, "x0": [1.0, "one"]}), content_type="application/json")
    assert resp.status_code == small.status_code == 400
    assert resp.get_json()["error"]["code"] == small.get_json()["error"]["code"] == "invalid_spec"
    assert resp.get_json()["error"]["field"].startswith("x0")
    resp = client.post("/v1/jobs", data=body[:-1], content_type="application/json")  # cut short
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_json"
    assert len(client.get("/v1/jobs").get_json()["jobs"]) == 1  # the refused ones left nothing
