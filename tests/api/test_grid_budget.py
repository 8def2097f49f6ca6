"""Grids evaluated at once share one memory budget: a request reserves its grid's estimated bytes
before any evaluation, and one that finds no room in time is a 503 with Retry-After (never a
grown process), while a request that fits runs at once."""
from __future__ import annotations

import json
import threading

import pytest

from service.api.waiting import GridBudget
from service.errors import DescentError
from service.spec import check_spec
from service.spec.surface import evaluation_peak, grid_bytes
from service.config import Limits

HEAVY = {"objective": "outer(x, x).sum()", "x0": {"shape": [8000], "init": "ones"}, "steps": 0}


def test_a_reservation_waits_for_room_and_is_503_without_it():
    budget = GridBudget(100, wait_seconds=0.05)
    with budget.held(70):
        with pytest.raises(DescentError) as refused:
            with budget.held(40):
                pass
        assert refused.value.status == 503 and refused.value.headers["Retry-After"]
        with budget.held(30):  # what fits runs at once
            assert budget.used == 100
    assert budget.used == 0

    budget = GridBudget(100, wait_seconds=30)
    inside, release, done = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with budget.held(1000):  # over the whole budget: it runs alone
            inside.set()
            release.wait(30)

    def second() -> None:
        with budget.held(10):
            done.set()

    threading.Thread(target=first).start()
    assert inside.wait(10) and budget.used == 100
    waiter = threading.Thread(target=second)
    waiter.start()
    assert not done.is_set()
    release.set()
    assert done.wait(10)
    waiter.join(10)
    assert budget.used == 0


def test_the_estimate_of_a_heavy_objective_is_its_peak_before_any_evaluation():
    checked = check_spec(HEAVY, Limits(), trace=False)
    peak = evaluation_peak(checked)
    assert peak is not None and peak >= 8000 * 8000 * 4  # the outer product alone
    assert peak <= grid_bytes(checked, peak) <= 2 * peak
    light = check_spec({"objective": "(x ** 2).sum()", "x0": [1.0, 2.0], "steps": 0}, Limits(), trace=False)
    assert grid_bytes(light, evaluation_peak(light)) <= 64 * 2**20 + 2**20


def test_a_surface_that_finds_no_room_is_503_with_retry_after(app, client, run_job):
    resp = client.post("/v1/jobs", data=json.dumps({"objective": "(x ** 2).sum()", "x0": [1.0, 2.0], "steps": 3}),
                       content_type="application/json")
    job_id = resp.get_json()["id"]
    run_job(job_id)
    grids = app.extensions["descent"].grids
    grids.wait_seconds = 0.05
    with grids.held(grids.total):
        busy = client.get(f"/v1/jobs/{job_id}/surface?n=10")
        plot = client.get(f"/v1/jobs/{job_id}/plot.png")
    assert busy.status_code == 503 and busy.get_json()["error"]["code"] == "service_busy"
    assert busy.headers["Retry-After"] and plot.status_code == 503
    assert client.get(f"/v1/jobs/{job_id}/surface?n=10").status_code == 200
    assert grids.used == 0
