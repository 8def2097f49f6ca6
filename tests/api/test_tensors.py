"""Big tensors through the API, on SQLite and PostgreSQL: a job document carries an x of more than
DESCENT_INLINE_ELEMENTS numbers as a summary and a link; ``/x``, ``/grad`` and ``/x0`` answer
its values bit for bit as .npy or JSON; x0 and data upload as .npy files; a delete takes the
binary result with the job."""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from service.engine import run as run_engine
from service.spec import check_spec
from service.spec.start import start_tensor
from service.store import data, tensors
from service.store.models import DataTensor, JobTensor
from tests.api.test_sweeps import Client, client, run  # noqa: F401 - the fixture

N = 12_000  # over the default DESCENT_INLINE_ELEMENTS (10,000)
SPEC = {"objective": "((x - 0.5) ** 2).sum()", "x0": {"shape": [40, N // 40], "init": "normal", "seed": 3},
        "steps": 3, "optimizer": {"name": "adam", "lr": 0.1}, "dtype": "float64", "record": {"every": 1, "x": False}}


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def upload(client: Client, spec: dict[str, Any], **arrays: Any) -> Any:
    files = {name: (io.BytesIO(raw if isinstance(raw, bytes) else npy(raw)), f"{name}.npy") for name, raw in arrays.items()}
    return client.client.post("/v1/jobs", data={"spec": json.dumps(spec), **files}, content_type="multipart/form-data",
                              headers=client._headers())


def finished(client: Client, spec: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/v1/jobs", spec)
    assert resp.status_code == 202, resp.get_json()
    assert run(client.app, resp.get_json()["id"]) == "succeeded"
    return client.get(f"/v1/jobs/{resp.get_json()['id']}").get_json()


def test_a_big_x_is_a_summary_in_the_document_and_bit_exact_as_npy_and_json(client):
    job = finished(client, SPEC)
    want = run_engine(check_spec(SPEC)).x
    summary = job["result"]["x"]
    assert summary == {**tensors.summary(want), "href": f"/v1/jobs/{job['id']}/x"}
    assert summary["shape"] == [40, N // 40] and summary["size"] == N
    assert len(client.get(f"/v1/jobs/{job['id']}").data) < 20_000
    listed = client.get("/v1/jobs").get_json()["jobs"][0]["result"]["x"]
    assert listed == summary
    resp = client.get(summary["href"])
    assert resp.status_code == 200 and resp.mimetype == "application/x-npy"
    assert int(resp.headers["Content-Length"]) == len(resp.data)
    assert np.load(io.BytesIO(resp.data)).tobytes() == want.tobytes()
    as_json = client.client.get(summary["href"], headers={"Accept": "application/json"}).get_json()
    assert as_json["shape"] == [40, N // 40] and np.array(as_json["values"]).tobytes() == want.tobytes()
    inline = client.get(f"/v1/jobs/{job['id']}?include=x").get_json()["result"]["x"]
    assert np.array(inline).tobytes() == want.tobytes()
    surface = client.get(f"/v1/jobs/{job['id']}/surface?n=5")  # around the final x, read from binary
    assert surface.status_code == 200, surface.get_json()
    assert client.get(f"/v1/jobs/{job['id']}/plot.png?n=5").status_code == 200


def test_a_small_x_stays_inline_and_is_served_too(client, lesson_parabola):
    job = finished(client, lesson_parabola)
    assert isinstance(job["result"]["x"], list)
    got = np.load(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/x?format=npy").data))
    assert got.tolist() == job["result"]["x"]
    assert np.load(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/x0").data)).tolist() == lesson_parabola["x0"]


def test_grad_x0_and_what_a_job_does_not_have(client):
    queued = client.post("/v1/jobs", SPEC).get_json()
    resp = client.get(f"/v1/jobs/{queued['id']}/x")
    assert resp.status_code == 409 and "no final x yet" in resp.get_json()["error"]["message"]
    x0 = np.load(io.BytesIO(client.get(f"/v1/jobs/{queued['id']}/x0").data))
    assert x0.shape == (40, N // 40)
    assert x0.tobytes() == start_tensor(check_spec(SPEC)).numpy().tobytes()
    assert run(client.app, queued["id"]) == "succeeded"
    resp = client.get(f"/v1/jobs/{queued['id']}/grad")
    assert resp.status_code == 404 and "record.grad" in resp.get_json()["error"]["message"]
    with_grad = finished(client, {**SPEC, "steps": 0})
    grad = np.load(io.BytesIO(client.get(f"/v1/jobs/{with_grad['id']}/grad").data))
    assert with_grad["result"]["grad"]["size"] == N and np.allclose(grad, 2 * (x0 - 0.5))
    for bad in ("format=csv", "format="):
        resp = client.get(f"/v1/jobs/{queued['id']}/x?{bad}")
        assert resp.status_code == (400 if bad == "format=csv" else 200)
    assert client.get("/v1/jobs/00000000-0000-4000-8000-000000000000/x").status_code == 404


def test_x0_uploaded_as_npy_runs_as_the_same_job_in_json(client):
    x0 = np.random.default_rng(5).normal(size=(40, N // 40))
    spec = {k: v for k, v in SPEC.items() if k != "x0"}
    resp = upload(client, spec, x0=x0)
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert data.is_reference(job["spec"]["x0"]) and job["spec"]["x0"]["shape"] == [40, N // 40]
    assert len(json.dumps(job)) < 20_000
    assert np.load(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/x0").data)).tobytes() == x0.tobytes()
    assert client.get(f"/v1/jobs/{job['id']}?include=x0").get_json()["spec"]["x0"] == x0.tolist()
    assert run(client.app, job["id"]) == "succeeded"
    by_json = finished(client, {**SPEC, "x0": x0.tolist()})
    assert by_json["spec"]["x0"] == job["spec"]["x0"]  # the same tensor, stored once for the owner
    xs = [client.get(f"/v1/jobs/{j}/x").data for j in (job["id"], by_json["id"])]
    assert xs[0] == xs[1]
    with client.app.extensions["descent"].db.session() as s:
        assert s.scalar(select(func.count()).select_from(DataTensor)) == 1


@pytest.mark.slow
def test_data_uploads_and_bad_uploads(client):
    a = np.arange(6, dtype=np.int32).reshape(3, 2)
    spec = {"objective": "((A @ x) ** 2).sum()", "x0": [1.0, -1.0], "steps": 2, "optimizer": {"name": "sgd", "lr": 0.01}}
    resp = upload(client, spec, **{"data.A": a})
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["id"]
    assert client.get(f"/v1/jobs/{job_id}?include=data").get_json()["spec"]["data"]["A"] == a.astype(float).tolist()
    cases = [({"x0": np.ones(3)}, spec, "x0", "given twice"),
             ({"x0": b"not a npy file"}, {"objective": "(x**2).sum()", "steps": 1}, "x0", ".npy"),
             ({"x0": np.array(["a", "b"])}, {"objective": "(x**2).sum()", "steps": 1}, "x0", "real numbers"),
             ({"x0": np.array([1.0, np.nan])}, {"objective": "(x**2).sum()", "steps": 1}, "x0", "NaN"),
             ({"weights": np.ones(2)}, spec, "weights", "unknown upload"),
             # refused from its header: 2 MB of bool would be 16 MB of float64 and 2,000,000 Python floats
             ({"x0": np.ones(2 * 10 ** 6, dtype=bool)}, {"objective": "(x**2).sum()", "steps": 1}, "x0",
              "holds 2,000,000 numbers, over the limit of 1,000,000")]
    for arrays, body, field, words in cases:
        resp = upload(client, body, **arrays)
        error = resp.get_json()["error"]
        assert resp.status_code in (400, 413) and error["field"] == field and words in error["message"], error
    object_array = io.BytesIO()
    np.save(object_array, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    resp = upload(client, {"objective": "(x**2).sum()", "steps": 1}, x0=object_array.getvalue())
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "x0"
    resp = client.client.post("/v1/jobs", data={"x0": (io.BytesIO(npy(np.ones(2))), "x0.npy")},
                              content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "spec"
    twice = {"spec": json.dumps({"objective": "(x**2).sum()", "steps": 1}),
             "x0": [(io.BytesIO(npy(np.ones(2))), "a.npy"), (io.BytesIO(npy(np.ones(3))), "b.npy")]}
    resp = client.client.post("/v1/jobs", data=twice, content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "x0", resp.get_json()
    assert "more than one part" in resp.get_json()["error"]["message"]
    resp = client.client.post(f"/v1/jobs/{job_id}/cancel", data={"spec": "{}"}, content_type="multipart/form-data")
    assert resp.status_code == 415


def test_a_delete_takes_the_binary_result_with_the_job(client):
    job = finished(client, SPEC)
    db = client.app.extensions["descent"].db
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(JobTensor)) == 1
    assert client.client.delete(f"/v1/jobs/{job['id']}").status_code == 200
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(JobTensor)) == 0
    assert client.get(f"/v1/jobs/{job['id']}/x").status_code == 404


def test_a_history_rows_x_comes_as_npy_too(client, lesson_parabola):
    job = finished(client, {**lesson_parabola, "steps": 4})
    rows = client.get(f"/v1/jobs/{job['id']}/history").get_json()["rows"]
    got = np.load(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/x?step=2").data))
    assert got.shape == np.array(lesson_parabola["x0"]).shape and got.tolist() == rows[2]["x"]
    for path, status, field in (("/x?step=99", 404, None), ("/grad?step=1", 404, None),
                                ("/x?step=abc", 400, "step"), ("/x?step=-1", 400, "step")):
        resp = client.get(f"/v1/jobs/{job['id']}{path}")
        assert resp.status_code == status and resp.get_json()["error"]["field"] == field, (path, resp.get_json())


def test_a_sweep_takes_its_bases_data_as_npy(client):
    from tests.helpers.line_fit import A, B, line_fit

    base = line_fit({"name": "sgd", "lr": 0.01}, 3)
    del base["data"]
    body = {"base": base, "grid": {"optimizer.lr": [0.01, 0.02]}}
    files = {"data.A": (io.BytesIO(npy(np.array(A))), "A.npy"), "data.b": (io.BytesIO(npy(np.array(B))), "b.npy")}
    resp = client.client.post("/v1/sweeps", data={"spec": json.dumps(body), **files}, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.get_json()
    jobs = client.get(f"/v1/sweeps/{resp.get_json()['id']}/jobs").get_json()["jobs"]
    assert len(jobs) == 2
    full = client.get(f"/v1/jobs/{jobs[0]['id']}?include=data").get_json()
    assert full["spec"]["data"] == {"A": A, "b": B}
    resp = client.client.post("/v1/sweeps", data={"spec": json.dumps({"grid": {}}), **{"x0": (io.BytesIO(npy(np.ones(2))), "x0.npy")}},
                              content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "spec"
