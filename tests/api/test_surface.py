"""``/v1/jobs/<id>/surface`` and ``/v1/jobs/<id>/plot.png`` on the embedded backend."""
from __future__ import annotations

import json
import re
import struct
from typing import Any

import numpy as np
import pytest
import torch

from service.api.surface import MAX_GRID_VALUES, N_RANGE
from service.expr import compile_expression, parse
from service.store import tokens
from service.status import JobStatus
from tests.helpers.lesson import LESSON_LOGLOG

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROSENBROCK = {"objective": {"name": "rosenbrock"}, "steps": 300, "optimizer": {"name": "adam", "lr": 0.01},
              "dtype": "float64"}


def submit(client, spec: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/jobs", data=json.dumps(spec), content_type="application/json")
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def finished(client, run_job, spec: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    job_id = submit(client, spec)
    assert run_job(job_id) == JobStatus.SUCCEEDED
    return job_id


def strict_json(resp) -> Any:  # type: ignore[no-untyped-def]
    """The body parsed by a strict parser: a bare NaN or Infinity fails the test."""
    def refuse(name: str) -> None:
        raise AssertionError(f"bare {name} in the JSON")
    return json.loads(resp.get_data(as_text=True), parse_constant=refuse)


def refused(resp, field: str, status: int = 400) -> bool:  # type: ignore[no-untyped-def]
    return resp.status_code == status and resp.get_json()["error"]["field"] == field


def path_points(client, job_id: str, coords: tuple[int, int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    rows = client.get(f"/v1/jobs/{job_id}/history?limit=100000&fields=x").get_json()["rows"]
    flat = np.array([np.ravel(r["x"]) for r in rows])
    return flat[:, list(coords)]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- /surface ---------------------------------------------------------------------------------

def test_default_surface_holds_the_path_and_values_are_the_objective(client, run_job):
    job_id = finished(client, run_job, LESSON_LOGLOG)
    resp = client.get(f"/v1/jobs/{job_id}/surface")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = strict_json(resp)
    assert body["coords"] == [0, 1] and len(body["x"]) == len(body["y"]) == 100
    assert len(body["f"]) == 100 and all(len(row) == 100 for row in body["f"])
    xs, ys = np.array(body["x"]), np.array(body["y"])
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0)
    path = path_points(client, job_id, (0, 1))
    assert xs[0] < path[:, 0].min() and path[:, 0].max() < xs[-1]
    assert ys[0] < path[:, 1].min() and path[:, 1].max() < ys[-1]

    # f[r][c] is the objective at (x[c], y[r]) with the other elements at the final x, in float32
    final = torch.tensor(client.get(f"/v1/jobs/{job_id}").get_json()["result"]["x"], dtype=torch.float32)
    objective = compile_expression(parse(LESSON_LOGLOG["objective"], "w"))
    for r, c in [(0, 0), (0, 99), (99, 0), (37, 81)]:
        point = final.clone().reshape(-1)
        point[0], point[1] = xs[c], ys[r]
        assert body["f"][r][c] == pytest.approx(float(objective(point.reshape(2, 2))), rel=1e-6)


def test_catalog_default_surface_holds_start_end_and_minimum(client, run_job):
    job_id = finished(client, run_job, ROSENBROCK)
    body = strict_json(client.get(f"/v1/jobs/{job_id}/surface?n=20"))
    xs, ys = body["x"], body["y"]
    result = client.get(f"/v1/jobs/{job_id}").get_json()["result"]["x"]
    for px, py in [(-1.2, 1.0), (1.0, 1.0), tuple(result)]:  # start, the known minimum, the end
        assert xs[0] < px < xs[-1] and ys[0] < py < ys[-1]
    r, c = 7, 13
    assert body["f"][r][c] == pytest.approx(100 * (ys[r] - xs[c] ** 2) ** 2 + (1 - xs[c]) ** 2, rel=1e-12)


def test_explicit_ranges_and_n(client, run_job):
    job_id = finished(client, run_job, ROSENBROCK)
    body = strict_json(client.get(f"/v1/jobs/{job_id}/surface?n=5&x_range=-2,2&y_range=-1e0,3.0"))
    assert body["x"] == [-2.0, -1.0, 0.0, 1.0, 2.0] and body["y"] == [-1.0, 0.0, 1.0, 2.0, 3.0]
    assert body["f"][3][1] == pytest.approx(100 * (2 - 1) ** 2 + (1 + 1) ** 2)  # x = -1, y = 2
    low, high = N_RANGE
    assert len(strict_json(client.get(f"/v1/jobs/{job_id}/surface?n={low}"))["x"]) == low
    assert len(strict_json(client.get(f"/v1/jobs/{job_id}/surface?n={high}"))["f"]) == high
    for n in (str(low - 1), str(high + 1), "abc", "1.5", "-3"):
        assert refused(client.get(f"/v1/jobs/{job_id}/surface?n={n}"), "n"), n
    assert client.get(f"/v1/jobs/{job_id}/surface?n=").status_code == 200  # empty is the default


def test_coords_choose_the_axes_and_the_rest_stay_at_the_final_x(client, run_job):
    job_id = finished(client, run_job, LESSON_LOGLOG)
    body = strict_json(client.get(f"/v1/jobs/{job_id}/surface?coords=3,1&n=9"))
    assert body["coords"] == [3, 1]
    path = path_points(client, job_id, (3, 1))
    assert body["x"][0] < path[:, 0].min() and path[:, 0].max() < body["x"][-1]
    assert body["y"][0] < path[:, 1].min() and path[:, 1].max() < body["y"][-1]
    final = torch.tensor(client.get(f"/v1/jobs/{job_id}").get_json()["result"]["x"], dtype=torch.float32).reshape(-1)
    point = final.clone()
    point[3], point[1] = body["x"][2], body["y"][6]
    expected = float(torch.log(torch.log(point + 7)).prod())
    assert body["f"][6][2] == pytest.approx(expected, rel=1e-6)


def test_a_queued_job_uses_x0_and_a_degenerate_box_gets_a_width(client):
    job_id = submit(client, {"objective": "(x ** 2).sum()", "x0": [2.0, 2.0, 5.0], "dtype": "float64"})
    body = strict_json(client.get(f"/v1/jobs/{job_id}/surface?n=3&coords=0,2"))
    assert body["x"][0] < 2.0 < body["x"][-1] and body["x"][-1] - body["x"][0] >= 1.0
    assert body["y"][0] < 5.0 < body["y"][-1]
    assert body["f"][1][1] == pytest.approx(2.0 ** 2 + 2.0 ** 2 + 5.0 ** 2)  # the centre is x0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["x_range", "y_range"])
@pytest.mark.parametrize("value", ["2,1", "1,1", "a,b", "1", "1,2,3", "nan,1", "1,inf", "1e999,2e999", " 1,2", "0x1,2"])
def test_bad_ranges_are_refused_naming_the_parameter(client, name, value):
    job_id = submit(client, LESSON_LOGLOG)
    resp = client.get(f"/v1/jobs/{job_id}/surface", query_string={name: value})
    assert refused(resp, name), resp.get_json()
    assert refused(client.get(f"/v1/jobs/{job_id}/plot.png", query_string={name: value}), name)


@pytest.mark.parametrize("value", ["0,0", "0,4", "1", "a,b", "-1,2", "0,1,2"])
def test_bad_coords_are_refused(client, value):
    job_id = submit(client, LESSON_LOGLOG)
    assert refused(client.get(f"/v1/jobs/{job_id}/surface", query_string={"coords": value}), "coords")


def test_a_job_with_one_element_has_no_surface(client):
    job_id = submit(client, {"objective": "(x ** 2).sum()", "x0": [3.0]})
    resp = client.get(f"/v1/jobs/{job_id}/surface")
    assert refused(resp, "coords") and "two" in resp.get_json()["error"]["message"]
    assert refused(client.get(f"/v1/jobs/{job_id}/plot.png"), "coords")
    assert client.get(f"/v1/jobs/{job_id}/plot.png?kind=loss").status_code == 200


def test_a_grid_over_the_cost_limit_is_a_413_naming_n(client):
    numel = 1000
    job_id = submit(client, {"objective": "(x ** 2).sum()", "x0": {"shape": [numel]}})
    most = int((MAX_GRID_VALUES // numel) ** 0.5)
    resp = client.get(f"/v1/jobs/{job_id}/surface?n={most + 1}")
    assert refused(resp, "n", 413) and f"at most {most}" in resp.get_json()["error"]["message"]
    assert client.get(f"/v1/jobs/{job_id}/surface?n={most}").status_code == 200


def test_non_finite_values_are_valid_json(client):
    job_id = submit(client, {"objective": "log(x).sum()", "x0": [1.0, 2.0]})
    body = strict_json(client.get(f"/v1/jobs/{job_id}/surface?n=3&x_range=-1,1&y_range=1,2"))
    assert body["f"][0][0] == "NaN" and body["f"][0][1] == "-Infinity"


def test_unknown_job_and_unknown_parameter(client):
    missing = "00000000-0000-4000-8000-000000000000"
    for path in ("surface", "plot.png", "plot.png?kind=loss"):
        resp = client.get(f"/v1/jobs/{missing}/{path}")
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    job_id = submit(client, LESSON_LOGLOG)
    assert refused(client.get(f"/v1/jobs/{job_id}/surface?m=3"), "m")


def test_another_owners_job_is_a_404_like_an_unknown_one(guarded):
    client, database = guarded
    alice = {"Authorization": f"Bearer {tokens.create_token(database, 'alice', False)[1]}"}
    bob = {"Authorization": f"Bearer {tokens.create_token(database, 'bob', False)[1]}"}
    resp = client.post("/v1/jobs", data=json.dumps(LESSON_LOGLOG), content_type="application/json", headers=alice)
    job_id = resp.get_json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/surface?n=3", headers=alice).status_code == 200
    for path in ("surface?n=3", "plot.png", "plot.png?kind=loss"):
        theirs = client.get(f"/v1/jobs/{job_id}/{path}", headers=bob)
        unknown = client.get(f"/v1/jobs/00000000-0000-4000-8000-000000000000/{path}", headers=bob)
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.get_json()["error"]["code"] == unknown.get_json()["error"]["code"]
    assert client.get(f"/v1/jobs/{job_id}/surface").status_code == 401


# --- /plot.png --------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "?kind=contour", "?kind=loss", "?kind=contour&n=10&coords=2,0",
                                   "?kind=loss&n=10", "?kind="])
@pytest.mark.slow
def test_plots_are_png_images(client, run_job, query):
    job_id = finished(client, run_job, LESSON_LOGLOG)
    resp = client.get(f"/v1/jobs/{job_id}/plot.png{query}")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert png_size(resp.data) == (640, 480)


def test_plots_of_a_catalog_job_and_of_a_queued_job(client, run_job):
    for job_id in (finished(client, run_job, ROSENBROCK), submit(client, LESSON_LOGLOG)):
        for kind in ("contour", "loss"):
            resp = client.get(f"/v1/jobs/{job_id}/plot.png?kind={kind}")
            assert resp.status_code == 200 and png_size(resp.data) == (640, 480)


def test_plot_parameters_are_checked(client):
    job_id = submit(client, LESSON_LOGLOG)
    assert refused(client.get(f"/v1/jobs/{job_id}/plot.png?kind=surface"), "kind")
    assert refused(client.get(f"/v1/jobs/{job_id}/plot.png?n=1"), "n")
    assert refused(client.get(f"/v1/jobs/{job_id}/plot.png?kind=loss&n={N_RANGE[1] + 1}"), "n")
    assert refused(client.get(f"/v1/jobs/{job_id}/plot.png?coords=0,9"), "coords")


# --- the OpenAPI document states the handlers' bounds -----------------------------------------

@pytest.mark.parametrize("path", ["/v1/jobs/{job_id}/surface", "/v1/jobs/{job_id}/plot.png"])
def test_documented_parameters_are_the_handlers(client, path):
    doc = client.get("/openapi.json").get_json()
    params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "query"}
    expected = {"n", "x_range", "y_range", "coords"} | ({"kind"} if path.endswith(".png") else set())
    assert set(params) == expected
    assert (params["n"]["schema"]["minimum"], params["n"]["schema"]["maximum"]) == N_RANGE
    url = path.replace("{job_id}", submit(client, LESSON_LOGLOG))
    span = re.compile(params["x_range"]["schema"]["pattern"])
    # every value the pattern refuses is refused; the pattern cannot say lo < hi, the handler does
    for value, matches, accepted in [("-2,2", True, True), ("1.5e-3,2.25E+2", True, True), ("0.,1", True, True),
                                     ("2,1", True, False), ("1,1", True, False), ("a,b", False, False),
                                     ("1e999,1", False, False), ("1,2,3", False, False), (" 1,2", False, False)]:
        assert bool(span.search(value)) is matches, value
        assert (client.get(url, query_string={"x_range": value}).status_code == 200) is accepted, value
    pairs = re.compile(params["coords"]["schema"]["pattern"])
    for value, matches, accepted in [("0,1", True, True), ("3,2", True, True), ("0,0", True, False),
                                     ("0,4", True, False), ("-1,0", False, False), ("0", False, False)]:
        assert bool(pairs.search(value)) is matches, value
        assert (client.get(url, query_string={"coords": value, "n": "3"}).status_code == 200) is accepted, value
    if "kind" in params:
        assert params["kind"]["schema"]["enum"] == ["contour", "loss"]
    responses = doc["paths"][path]["get"]["responses"]
    assert {"200", "400", "404", "413"} <= set(responses)


def test_grids_and_plots_take_a_waiting_slot_and_are_503_when_none_is_free(app, client):
    slots = app.extensions["descent"].waiters
    job_id = submit(client, LESSON_LOGLOG)
    taken = 0
    while slots.take():
        taken += 1
    try:
        for path in ("surface?n=3", "plot.png", "plot.png?kind=loss"):
            resp = client.get(f"/v1/jobs/{job_id}/{path}")
            assert resp.status_code == 503 and resp.headers["Retry-After"], path
    finally:
        for _ in range(taken):
            slots.give_back()
    assert client.get(f"/v1/jobs/{job_id}/surface?n=3").status_code == 200 and slots.in_use == 0
