"""``GET /v1/sweeps`` (newest first, cursor-paged, each sweep with its counts and diverged jobs, by
owner) and ``GET /v1/sweeps/ID/grid`` (final f of every job over two grid keys, computed in SQL),
on SQLite and PostgreSQL, with the sweeps' jobs run by the worker's own code or, for the README's
4,000-job sweep, ended in the database; and their refusals, each naming the parameter."""
from __future__ import annotations

import statistics
import time

import pytest
from sqlalchemy import bindparam, update

from service.api import create_app
from service.store import tokens
from service.store.models import Job
from testkit.backends import embedded_settings
from tests.api.test_sweeps import SWEEP, Client, client, every_page, run  # noqa: F401 - the fixture
from tests.api.conftest import RecordingDispatcher

# lr 1 on 10 * sum(x**2) multiplies x by -19 a step: those jobs diverge.
DIVERGING = {"base": {"objective": "10 * (x ** 2).sum()", "x0": [1.0, 1.0], "steps": 30, "optimizer": {"name": "sgd"}},
             "grid": {"optimizer.lr": [0.001, 0.01, 1.0], "steps": [20, 30]},
             "starts": {"count": 2, "init": "uniform", "low": -2, "high": 2, "seed": 0}, "name": "lr x steps"}


def run_all(client: Client, sweep_id: str) -> list[dict]:
    """Run every job of the sweep in this process; returns its summary (every page)."""
    for job in client.all_jobs(sweep_id, limit=100):
        if client.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "queued":
            run(client.app, job["id"])
    return every_page(client, f"/v1/sweeps/{sweep_id}?limit=7", "summary")


def test_the_grid_holds_every_jobs_final_f_by_two_keys(client):
    sweep = client.sweep(DIVERGING).get_json()
    summary = run_all(client, sweep["id"])
    assert len(summary) == 12 and {item["status"] for item in summary} == {"succeeded"}
    diverged = [i for i in summary if i["stop_reason"] == "diverged"]
    assert len(diverged) == 4 and all(i["grid"]["optimizer.lr"] == 1.0 for i in diverged)
    for stat, of in (("min", min), ("median", statistics.median), ("mean", statistics.fmean)):
        body = client.get(f"/v1/sweeps/{sweep['id']}/grid?rows=optimizer.lr&cols=steps&stat={stat}").get_json()
        assert (body["rows_key"], body["cols_key"], body["stat"]) == ("optimizer.lr", "steps", stat)
        assert body["rows"] == [0.001, 0.01, 1.0] and body["cols"] == [20, 30]
        assert body["counts"] == [[2, 2], [2, 2], [2, 2]]
        assert body["diverged"] == [[0, 0], [0, 0], [2, 2]] and body["finite"] == [[2, 2], [2, 2], [0, 0]]
        assert body["cells"][2] == [None, None]  # every job of the row diverged: no finite f to rank
        for i, lr in enumerate(body["rows"][:2]):
            for j, steps in enumerate(body["cols"]):
                fs = [item["f"] for item in summary if item["grid"] == {"optimizer.lr": lr, "steps": steps}]
                assert body["cells"][i][j] == pytest.approx(of(fs), rel=1e-12), (stat, lr, steps)
    one_key = client.get(f"/v1/sweeps/{sweep['id']}/grid?rows=steps").get_json()
    assert one_key["cols"] == [None] and one_key["counts"] == [[6], [6]] and one_key["diverged"] == [[2], [2]]
    assert one_key["stat"] == "min"
    whole = client.get(f"/v1/sweeps/{sweep['id']}/grid").get_json()
    assert whole["rows"] == [None] and whole["counts"] == [[12]]
    assert whole["cells"] == [[min(i["f"] for i in summary if i["stop_reason"] != "diverged")]]
    detail = client.get(f"/v1/sweeps/{sweep['id']}").get_json()
    assert detail["diverged"] == 4 and detail["counts"]["succeeded"] == 12


def test_the_grid_refuses_what_is_not_a_grid_key_or_a_stat_naming_the_parameter(client):
    sweep_id = client.sweep().get_json()["id"]
    base = f"/v1/sweeps/{sweep_id}/grid"
    for query, field, says in (("rows=optimizer.momentum", "rows", "optimizer.name, optimizer.lr"),
                               ("rows=optimizer.name&cols=lr", "cols", "grid keys"),
                               ("rows=optimizer.lr&cols=optimizer.lr", "cols", "another grid key"),
                               ("cols=optimizer.lr", "rows", "needed"),
                               ("rows=optimizer.lr&stat=max", "stat", "min, median, mean"),
                               ("rows=optimizer.lr&colums=optimizer.name", "colums", "unknown query parameter")):
        resp = client.get(f"{base}?{query}")
        assert resp.status_code == 400, (query, resp.get_json())
        error = resp.get_json()["error"]
        assert error["field"] == field and says in error["message"], (query, error)
    assert client.get("/v1/sweeps/00000000-0000-0000-0000-000000000000/grid").status_code == 404


def test_a_4000_job_sweep_has_every_cell_a_number_and_counts_summing_to_4000(client, db):
    """The README's sweep (2 optimisers x 2 learning rates x 1,000 starts): its jobs ended in the
    database (running them is the engine's business, tested elsewhere), the grid read over all of them."""
    body = {"base": {"objective": {"name": "rosenbrock"}, "steps": 200, "record": {"every": 10}},
            "grid": {"optimizer.name": ["sgd", "adam"], "optimizer.lr": [0.001, 0.01]},
            "starts": {"count": 1000, "init": "uniform", "low": -2, "high": 2, "seed": 0}}
    resp = client.sweep(body)
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]
    jobs = Job.__table__
    with db.session() as s:
        ids = [row[0] for row in s.execute(jobs.select().with_only_columns(jobs.c.id, jobs.c.sweep_index)
                                           .where(jobs.c.sweep_id == sweep_id).order_by(jobs.c.sweep_index))]
        s.execute(update(jobs).where(jobs.c.id == bindparam("job")).values(status="succeeded", result=bindparam("res")),
                  [{"job": job_id, "res": {"f": 1.0 + k, "stop_reason": "steps"}} for k, job_id in enumerate(ids)])
    start = time.perf_counter()
    grid = client.get(f"/v1/sweeps/{sweep_id}/grid?rows=optimizer.name&cols=optimizer.lr&stat=median").get_json()
    elapsed = time.perf_counter() - start
    assert sum(map(sum, grid["counts"])) == 4000 and grid["counts"] == [[1000, 1000], [1000, 1000]]
    assert all(isinstance(v, float) for row in grid["cells"] for v in row), grid["cells"]
    assert grid["cells"] == [[500.5, 1500.5], [2500.5, 3500.5]]  # job k has f = k + 1
    assert elapsed < 2.0, f"the grid of 4,000 jobs took {elapsed:.2f} s"
    listed = client.get("/v1/sweeps?limit=1").get_json()["sweeps"][0]
    assert listed["id"] == sweep_id and listed["counts"]["succeeded"] == 4000 and listed["diverged"] == 0


def test_sweeps_are_listed_newest_first_a_page_at_a_time_by_owner(db, tmp_path):
    app = create_app(embedded_settings(tmp_path, auth="required", database_url=db.url), {"TESTING": True}, db=db, dispatcher=RecordingDispatcher())
    alice, bob, admin = (Client(app, tokens.create_token(db, owner, owner == "ops")[1]) for owner in ("alice", "bob", "ops"))
    small = {**SWEEP, "starts": {"count": 1}}
    made = [alice.sweep({**small, "name": f"a{k}"}).get_json()["id"] for k in range(5)]
    theirs = bob.sweep({**small, "name": "b"}).get_json()["id"]
    listed = every_page(alice, "/v1/sweeps?limit=2", "sweeps")
    assert [s["id"] for s in listed] == made[::-1]
    assert all(s["counts"]["queued"] == 4 and s["jobs"] == 4 and s["diverged"] == 0 for s in listed)
    assert listed[0]["links"]["self"] == f"/v1/sweeps/{made[-1]}" and listed[0]["grid"] == SWEEP["grid"]
    assert [s["id"] for s in bob.get("/v1/sweeps").get_json()["sweeps"]] == [theirs]
    assert {s["id"] for s in admin.get("/v1/sweeps").get_json()["sweeps"]} == {*made, theirs}
    assert bob.get(f"/v1/sweeps/{made[0]}/grid?rows=optimizer.lr").status_code == 404
    for query, field in (("cursor=bm90IGEgY3Vyc29y", "cursor"), ("limit=0", "limit"), ("limit=1001", "limit"),
                         ("sort=f", "sort")):
        resp = alice.get(f"/v1/sweeps?{query}")
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field, (query, resp.get_json())
    assert Client(app).get("/v1/sweeps").status_code == 401


def test_a_sweeps_job_names_its_sweep_and_a_lone_job_none(client, lesson_parabola):
    sweep_id = client.sweep().get_json()["id"]
    jobs = client.all_jobs(sweep_id, limit=100)
    assert [j["sweep"] for j in jobs] == [{"id": sweep_id, "index": k, "href": f"/v1/sweeps/{sweep_id}"}
                                          for k in range(12)]
    assert client.get(f"/v1/jobs/{jobs[5]['id']}").get_json()["sweep"]["index"] == 5
    alone = client.post("/v1/jobs", lesson_parabola).get_json()
    assert alone["sweep"] is None and client.get("/v1/jobs?order=desc&limit=1").get_json()["jobs"][0]["sweep"] is None
