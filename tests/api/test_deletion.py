"""``DELETE /v1/jobs/<id>`` and ``DELETE /v1/sweeps/<id>`` through the API, on SQLite and
PostgreSQL with auth required: the owner and an admin may, another owner gets the 404 an unknown id
gets, a second DELETE is a 404 and changes nothing, and the owner's quota is free at once."""
from __future__ import annotations

from typing import Any

from service.config import Quotas
from service.status import JobStatus
from tests.helpers.lesson import LESSON_LOGLOG

UNKNOWN = "00000000-0000-4000-8000-000000000000"
SWEEP = {"base": {"objective": {"name": "rosenbrock"}, "steps": 5},
         "grid": {"optimizer.lr": [0.001, 0.01]}, "starts": {"count": 3, "init": "uniform", "low": -1, "high": 1}}


def not_found(resp: Any, ident: str) -> dict[str, Any]:
    """A 404's error object, with the id it names replaced (to compare it with another's)."""
    assert resp.status_code == 404, resp.get_json()
    error = resp.get_json()["error"]
    return {**error, "message": error["message"].replace(ident, "ID")}


def test_the_owner_deletes_a_job_and_a_second_delete_is_a_404(auth_api):
    _, user = auth_api()
    alice = user("alice")
    job_id, kept = alice.submitted(), alice.submitted()
    resp = alice.delete(f"/v1/jobs/{job_id}")
    assert resp.status_code == 200
    assert resp.get_json() == {"id": job_id, "deleted": "job",
                               "removed": {"jobs": 1, "history_rows": 0, "data_tensors": 0, "sweeps": 0}}
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/history"):
        assert alice.get(path).status_code == 404
    again = alice.delete(f"/v1/jobs/{job_id}")
    assert not_found(again, job_id) == not_found(alice.delete(f"/v1/jobs/{UNKNOWN}"), UNKNOWN)
    assert alice.get(f"/v1/jobs/{kept}").get_json()["status"] == JobStatus.QUEUED  # nothing else changed
    assert [j["id"] for j in alice.get("/v1/jobs").get_json()["jobs"]] == [kept]


def test_another_owners_job_is_a_404_exactly_as_an_unknown_one_and_an_admin_may(auth_api):
    _, user = auth_api()
    alice, bob, admin = user("alice"), user("bob"), user("ops", admin=True)
    job_id = alice.submitted()
    assert not_found(bob.delete(f"/v1/jobs/{job_id}"), job_id) == not_found(bob.delete(f"/v1/jobs/{UNKNOWN}"), UNKNOWN)
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 200  # untouched
    assert admin.delete(f"/v1/jobs/{job_id}").get_json()["removed"]["jobs"] == 1
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 404


def test_text_that_is_no_id_is_a_404(auth_api):
    _, user = auth_api()
    alice = user("alice")
    for ident in ("x", "%00", "a" * 300, "../jobs"):
        resp = alice.delete(f"/v1/jobs/{ident}")
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found", ident


def test_a_delete_frees_the_owners_quotas_at_once(auth_api):
    from service.spec import check_spec
    from service.config import Limits

    values = check_spec(LESSON_LOGLOG, Limits()).recorded_values
    _, user = auth_api(Quotas(recorded_values=values, active_jobs=1))
    alice = user("alice")
    first = alice.submitted()
    refused = alice.post("/v1/jobs", LESSON_LOGLOG)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert alice.delete(f"/v1/jobs/{first}").status_code == 200
    alice.submitted()  # at once: no 429


def test_a_sweep_delete_removes_its_jobs_and_the_sweep(auth_api):
    _, user = auth_api()
    alice, bob = user("alice"), user("bob")
    resp = alice.post("/v1/sweeps", SWEEP)
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]
    jobs = [j["id"] for j in alice.get(f"/v1/sweeps/{sweep_id}/jobs").get_json()["jobs"]]
    assert len(jobs) == 6
    assert alice.delete(f"/v1/jobs/{jobs[0]}").status_code == 200  # one job of it, alone
    assert alice.get(f"/v1/sweeps/{sweep_id}").get_json()["counts"]["queued"] == 5
    assert not_found(bob.delete(f"/v1/sweeps/{sweep_id}"), sweep_id) == \
        not_found(bob.delete(f"/v1/sweeps/{UNKNOWN}"), UNKNOWN)
    resp = alice.delete(f"/v1/sweeps/{sweep_id}")
    assert resp.status_code == 200 and resp.get_json() == {
        "id": sweep_id, "deleted": "sweep", "removed": {"jobs": 5, "history_rows": 0, "data_tensors": 0, "sweeps": 1}}
    assert alice.get(f"/v1/sweeps/{sweep_id}").status_code == 404
    assert all(alice.get(f"/v1/jobs/{j}").status_code == 404 for j in jobs)
    assert alice.delete(f"/v1/sweeps/{sweep_id}").status_code == 404


def ran(app: Any, job_id: str) -> JobStatus:
    """Run a stored job to its end with the worker's own code, in this process."""
    from workers import runner
    from workers.state import WorkerState

    svc = app.extensions["descent"]
    return runner.execute(WorkerState(settings=svc.settings, db=svc.db, worker_id="test:1", hostname="test",
                                      queues=["cpu"], device="cpu"), job_id)


def test_a_finished_job_goes_with_its_history(auth_api, tmp_path):
    app, user = auth_api()
    alice = user("alice")
    job_id = alice.submitted()
    assert ran(app, job_id) == JobStatus.SUCCEEDED
    rows = len(alice.get(f"/v1/jobs/{job_id}/history?limit=10000").get_json()["rows"])
    assert rows == 501
    assert alice.delete(f"/v1/jobs/{job_id}").get_json()["removed"]["history_rows"] == rows
    assert alice.get(f"/v1/jobs/{job_id}/history").status_code == 404


def test_a_job_whose_history_the_retention_dropped_says_so(auth_api):
    from service.store import deletion

    app, user = auth_api()
    alice = user("alice")
    job_id = alice.submitted()
    svc = app.extensions["descent"]
    assert ran(app, job_id) == JobStatus.SUCCEEDED
    assert alice.get(f"/v1/jobs/{job_id}").get_json()["history_dropped_at"] is None
    done = deletion.apply_retention(svc.db, history_seconds=1e-9, job_seconds=None)
    assert [j.id for j in done.pruned] == [job_id]
    job = alice.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "succeeded" and job["history_dropped_at"] >= job["finished_at"]
    assert alice.get(f"/v1/jobs/{job_id}/history").get_json()["rows"] == []


FIT = {"objective": "((A @ w - b) ** 2).mean()", "variable": "w", "x0": [0.0, 0.0], "steps": 20,
       "data": {"A": [[1, 2], [3, 4], [5, 6]], "b": [1, 2, 3]}}


def test_deleting_one_job_of_a_sweep_keeps_the_data_its_siblings_run_on(auth_api):
    from workers import runner
    from workers.state import WorkerState

    app, user = auth_api()
    alice = user("alice")
    resp = alice.post("/v1/sweeps", {"base": FIT, "grid": {"optimizer.lr": [0.001, 0.01]}})
    assert resp.status_code == 202, resp.get_json()
    sweep_id = resp.get_json()["id"]
    first, second = [j["id"] for j in alice.get(f"/v1/sweeps/{sweep_id}/jobs").get_json()["jobs"]]
    gone = alice.delete(f"/v1/jobs/{first}").get_json()
    assert gone["removed"] == {"jobs": 1, "history_rows": 0, "data_tensors": 0, "sweeps": 0}
    svc = app.extensions["descent"]
    state = WorkerState(settings=svc.settings, db=svc.db, worker_id="test:1", hostname="test", queues=["cpu"],
                        device="cpu")
    assert runner.execute(state, second) == JobStatus.SUCCEEDED  # it still reads A and b
    other = alice.submitted(FIT)  # a job outside the sweep reading the same tensors
    resp = alice.delete(f"/v1/sweeps/{sweep_id}")
    assert resp.get_json()["removed"] == {"jobs": 1, "history_rows": 21, "data_tensors": 0, "sweeps": 1}
    assert alice.delete(f"/v1/jobs/{other}").get_json()["removed"]["data_tensors"] == 2  # the last reader


PROBE = {**FIT, "data": {"A": [[31337.25, 27182.5], [1.0, 2.0], [3.0, 4.0]], "b": [1.0, 0.0, 1.0]}}


def test_a_delete_reports_the_same_whether_or_not_another_owner_stores_the_same_data(auth_api):
    """Problem: a shared tensor made ``removed.data_tensors`` an oracle of another owner's data.
    Each owner has its own copy: bob's answers are the same with or without alice's job, and
    alice's job still reads its data after bob deletes his."""
    from workers import runner
    from workers.state import WorkerState

    app, user = auth_api()
    alice, bob = user("alice"), user("bob")

    def bobs_delete() -> dict[str, int]:
        job = bob.submitted(PROBE)
        resp = bob.delete(f"/v1/jobs/{job}")
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["removed"]

    alone = bobs_delete()
    assert alone == {"jobs": 1, "history_rows": 0, "data_tensors": 2, "sweeps": 0}
    kept = alice.submitted(PROBE)  # the very same tensors
    assert bobs_delete() == alone
    assert alice.get(f"/v1/jobs/{kept}?include=data").get_json()["spec"]["data"] == PROBE["data"]
    svc = app.extensions["descent"]
    state = WorkerState(settings=svc.settings, db=svc.db, worker_id="test:1", hostname="test", queues=["cpu"],
                        device="cpu")
    assert runner.execute(state, kept) == JobStatus.SUCCEEDED  # it still reads its A and b
    bob_sweep = bob.post("/v1/sweeps", {"base": PROBE, "grid": {"optimizer.lr": [0.001, 0.01]}}).get_json()
    assert bob.delete(f"/v1/sweeps/{bob_sweep['id']}").get_json()["removed"]["data_tensors"] == 2
    assert alice.delete(f"/v1/jobs/{kept}").get_json()["removed"]["data_tensors"] == 2  # alice's own copies
