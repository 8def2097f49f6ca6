"""Where ``device`` sends a job: ``auto`` goes to a GPU only where it pays, and only while a GPU
worker heartbeats; ``gpu`` and ``cpu`` go where they say."""
from __future__ import annotations

import dataclasses

import pytest

from service.api import fleet as fleet_api
from service.store import fleet
from tests.api.test_jobs import submit
from tests.api.test_sweeps import PARABOLA
from tests.helpers.lesson import LESSON_LOGLOG

BIG = {**LESSON_LOGLOG, "x0": {"shape": [8, 8], "init": "zeros"}}  # 64 elements


@pytest.fixture
def routing(app, monkeypatch):  # type: ignore[no-untyped-def]
    """The app with small thresholds: auto goes to a GPU for 64 elements or batches of 3 jobs."""
    svc = app.extensions["descent"]
    svc.settings = dataclasses.replace(svc.settings, auto_gpu_min_elements=64, auto_gpu_min_batch=3)
    monkeypatch.setitem(fleet_api._gpu_seen, "checked", -1e9)  # no cached answer from another test
    return app


def gpu_worker(app) -> None:
    fleet.heartbeat(app.extensions["descent"].db, fleet.Heartbeat("gpu-host:1", "gpu-host", 1, ["gpu"], "gpu"))


def queue_of(client, spec) -> str:
    resp = submit(client, spec)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["queue"]


def test_auto_stays_on_the_cpu_without_a_gpu_worker(routing, client):
    assert queue_of(client, {**BIG, "device": "auto"}) == "cpu"


def test_auto_goes_to_a_live_gpu_only_for_a_big_enough_x(routing, client):
    gpu_worker(routing)
    assert queue_of(client, {**LESSON_LOGLOG, "device": "auto"}) == "cpu"  # the lesson's 2x2: slower on a GPU
    assert queue_of(client, {**BIG, "device": "auto"}) == "gpu"
    assert queue_of(client, {**LESSON_LOGLOG, "device": "gpu"}) == "gpu"
    assert queue_of(client, {**BIG, "device": "cpu"}) == "cpu"


def test_auto_sends_a_big_enough_batch_of_a_sweep_to_a_live_gpu(routing, client):
    gpu_worker(routing)

    def sweep_queues(count: int) -> set[str]:
        body = {"base": {**PARABOLA, "device": "auto"}, "grid": {}, "starts": {"count": count, "init": "uniform",
                                                                               "low": -1, "high": 1, "seed": 0}}
        resp = client.post("/v1/sweeps", json=body)
        assert resp.status_code == 202, resp.get_json()
        jobs = client.get(f"/v1/sweeps/{resp.get_json()['id']}/jobs?limit=100").get_json()["jobs"]
        return {j["queue"] for j in jobs}

    assert sweep_queues(2) == {"cpu"}
    assert sweep_queues(3) == {"gpu"}
