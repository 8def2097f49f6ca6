"""Objectives of data through the API, on SQLite and PostgreSQL: submitted with the spec, kept apart
(references in the job's spec, values with ``?include=data``), run by the worker's own code to the
result of a plain torch loop, shared by a sweep's jobs, refused with the field when bad."""
from __future__ import annotations

from sqlalchemy import func, select

from service.store import data
from service.store.models import DataTensor, JobData
from tests.api.test_sweeps import Client, client, run  # noqa: F401 - the fixture
from tests.engine.test_data import plain_torch
from tests.helpers.line_fit import A, B, line_fit

import torch


def test_a_job_of_data_runs_to_a_plain_torch_loops_result(client):
    resp = client.post("/v1/jobs", line_fit({"name": "sgd", "lr": 0.01}, 300))
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert {name: entry["shape"] for name, entry in job["spec"]["data"].items()} == {"A": [100, 2], "b": [100]}
    assert all(data.is_reference(entry) for entry in job["spec"]["data"].values())
    assert run(client.app, job["id"]) == "succeeded"
    done = client.get(f"/v1/jobs/{job['id']}").get_json()
    assert (done["result"]["x"], done["result"]["f"]) == plain_torch(torch.optim.SGD, {"lr": 0.01}, 300)


def test_include_data_returns_the_values(client):
    job = client.post("/v1/jobs", line_fit({"name": "sgd", "lr": 0.01}, 3)).get_json()
    full = client.get(f"/v1/jobs/{job['id']}?include=data").get_json()
    assert full["spec"]["data"] == {"A": A, "b": B}
    resp = client.get(f"/v1/jobs/{job['id']}?include=everything")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "include"


def test_bad_data_is_a_400_naming_the_field_and_stores_nothing(client):
    for bad, field in (({"A": [[1.0, 2.0], [3.0]], "b": B}, "data.A"), ({"A": A, "b": B, "w": [1.0]}, "data.w"),
                       ({"A": A, "b": B, "exp": [1.0]}, "data.exp")):
        resp = client.post("/v1/jobs", {**line_fit({"name": "sgd", "lr": 0.01}, 3), "data": bad})
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field, resp.get_json()
    with client.app.extensions["descent"].db.session() as s:
        assert s.scalar(select(func.count()).select_from(DataTensor)) == 0


def test_a_sweeps_jobs_share_one_copy_of_the_data_and_batch_on_it(client):
    body = {"base": line_fit({"name": "adam", "lr": 0.05}, 50), "grid": {"optimizer.lr": [0.05, 0.1]},
            "starts": {"count": 20, "init": "uniform", "low": -3, "high": 3, "seed": 1}}
    resp = client.post("/v1/sweeps", body)
    assert resp.status_code in (200, 201, 202), resp.get_json()
    sweep = resp.get_json()
    db = client.app.extensions["descent"].db
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DataTensor)) == 2
        assert s.scalar(select(func.count()).select_from(JobData)) == 2 * 40
    jobs = client.get(f"/v1/sweeps/{sweep['id']}/jobs?limit=100").get_json()["jobs"]
    assert run(client.app, jobs[0]["id"], batch_max=64) == "succeeded"
    ended = [client.get(f"/v1/jobs/{j['id']}").get_json() for j in jobs]
    same_lr = [j for j in ended if j["spec"]["optimizer"]["lr"] == jobs[0]["spec"]["optimizer"]["lr"]]
    assert len(same_lr) == 20 and all(j["status"] == "succeeded" for j in same_lr)  # one batch, one A
    assert len({j["result"]["f"] for j in same_lr}) == 20  # each lane from its own start, on the same data


def test_the_surface_of_a_job_of_data_is_its_loss_over_slope_and_intercept(client):
    spec = {"objective": {"name": "least_squares"}, "data": {"A": A, "b": B}, "steps": 20, "dtype": "float64",
            "optimizer": {"name": "lbfgs", "lr": 1}}
    job = client.post("/v1/jobs", spec).get_json()
    assert run(client.app, job["id"]) == "succeeded"
    surface = client.get(f"/v1/jobs/{job['id']}/surface?n=5&x_range=2,3&y_range=-2,0").get_json()
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    for r, intercept in enumerate(surface["y"]):
        for c, slope in enumerate(surface["x"]):
            want = float(((a @ torch.tensor([slope, intercept], dtype=torch.float64) - b) ** 2).mean())
            assert abs(surface["f"][r][c] - want) <= 1e-9 * want
    done = client.get(f"/v1/jobs/{job['id']}").get_json()
    assert done["result"]["distance_to_minimum"] < 1e-6


def test_a_least_squares_sweeps_summary_knows_when_each_job_reached_the_minimum(client):
    body = {"base": {"objective": {"name": "least_squares"}, "data": {"A": A, "b": B}, "steps": 20, "dtype": "float64",
                     "optimizer": {"name": "lbfgs", "lr": 1}},
            "starts": {"count": 3, "init": "uniform", "low": -3, "high": 3, "seed": 1}, "tolerance": 1e-6}
    sweep = client.post("/v1/sweeps", body).get_json()
    jobs = client.get(f"/v1/sweeps/{sweep['id']}/jobs").get_json()["jobs"]
    for job in jobs:
        assert run(client.app, job["id"]) == "succeeded"
    summary = client.get(f"/v1/sweeps/{sweep['id']}").get_json()["summary"]
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    fmin = float(((a @ torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1) - b) ** 2).mean())
    reached = []
    for item in summary:
        assert item["distance_to_minimum"] < 1e-4
        history = client.get(f"/v1/jobs/{item['id']}/history").get_json()["rows"]
        first = next((row["step"] for row in history if abs(row["f"] - fmin) <= 1e-6), None)
        assert item["steps_to_tolerance"] == first  # the minimum read from the sweep's stored A and b
        reached.append(first)
    assert len(summary) == 3 and all(step is not None for step in reached), reached
