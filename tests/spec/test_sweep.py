"""Sweep expansion, without a database: counts and values of the grid's product, complete job specs
with explicit starts, validation errors naming the grid key, and the job-count limit checked before
anything is expanded."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from service.config import Limits
from service.spec import SpecError, check_spec
from service.spec.sweep import (
    best_minimum,
    expand,
    grid_values,
    job_specs,
    plan_sweep,
)

LIMITS = Limits()
ROSENBROCK = {"objective": {"name": "rosenbrock"}, "steps": 50, "record": {"every": 10}}


def specs(request: dict, limits: Limits = LIMITS) -> list[tuple[dict, dict, int]]:
    """(grid values, job spec, start) for every job, in the sweep's order."""
    plan = plan_sweep(request, limits)
    return [(v.values, spec, start) for v in expand(plan, limits) for start, spec in job_specs(v)]


def test_the_grid_product_times_the_starts_is_the_job_count_in_order():
    request = {"base": ROSENBROCK, "grid": {"optimizer.name": ["sgd", "adam", "rmsprop"], "optimizer.lr": [0.001, 0.01]},
               "starts": {"count": 4, "low": -2, "high": 2, "seed": 7}}
    plan = plan_sweep(request, LIMITS)
    assert plan.jobs == 3 * 2 * 4 and plan.n_starts == 4
    jobs = specs(request)
    assert len(jobs) == 24
    grid = [[k, v] for k, v in plan.grid]
    for index, (values, spec, start) in enumerate(jobs):
        assert spec["optimizer"] == {"name": values["optimizer.name"], "lr": values["optimizer.lr"]}
        assert grid_values(grid, plan.n_starts, index) == (values, start)
    assert [v["optimizer.name"] for v, _, s in jobs if s == 0] == ["sgd", "sgd", "adam", "adam", "rmsprop", "rmsprop"]
    # start i is the same point for every combination, drawn by numpy's default_rng(seed)
    expected = np.random.default_rng(7).uniform(-2, 2, size=(4, 2)).tolist()
    for _, spec, start in jobs:
        assert spec["x0"] == expected[start]


def test_every_job_spec_is_complete_and_passes_check_spec_as_is():
    for request in (
        {"base": ROSENBROCK, "grid": {"optimizer.lr": [0.001, 0.002]}, "starts": {"count": 3, "init": "normal"}},
        {"base": {"objective": "(x ** 2).sum()", "x0": {"shape": [2, 3], "init": "uniform", "seed": 3}},
         "grid": {"steps": [1, 5], "scheduler.name": ["step_lr"], "scheduler.step_size": [2]}},
        {"base": {"objective": "(x ** 2).sum()", "x0": [1.0, 2.0]}, "starts": [[0.5, 1.5], [3, 4]],
         "grid": {"dtype": ["float32", "float64"], "record.every": [1, 2], "stop.grad_norm": [1e-6]}},
        {"base": {"objective": {"name": "himmelblau"}}, "grid": {"optimizer": [{"name": "adam", "lr": 0.1},
                                                                             {"name": "lbfgs", "lr": 1}]}},
    ):
        for _, spec, _ in specs(request):
            assert isinstance(spec["x0"], list)
            assert check_spec(spec, LIMITS).as_json() == spec


def test_without_starts_each_job_gets_the_explicit_start_it_would_have_had():
    (_, spec, _), = specs({"base": {"objective": {"name": "rosenbrock"}}})
    assert spec["x0"] == [-1.2, 1.0]  # the catalog's default start, written out
    from service.engine.start import initial_point
    import torch

    base = {"objective": "(x ** 2).sum()", "x0": {"shape": [3], "init": "normal", "seed": 5}}
    (_, spec, _), = specs({"base": base})
    assert spec["x0"] == initial_point(check_spec(base), torch.float64, torch.device("cpu")).tolist()


@pytest.mark.parametrize("grid, field", [
    ({"optimizer.lr": [0.01, -1]}, "grid.optimizer.lr"),
    ({"optimizer.name": ["sgd", "nope"]}, "grid.optimizer.name"),
    ({"steps": [10, "many"]}, "grid.steps"),
    ({"dtype": ["float16"]}, "grid.dtype"),
    ({"stop.grad_norm": [-1]}, "grid.stop.grad_norm"),
    ({"objective.params.b": [1e9]}, "grid.objective.params.b"),
    ({"x0": [[1, 2]]}, "grid.x0"),
    ({"name": ["a"]}, "grid.name"),
    ({"optimizer.lr.x": [1]}, "grid.optimizer.lr.x"),
    ({"stop.nope": [1]}, "grid.stop.nope"),
    ({"steps": []}, "grid.steps"),
    ({"steps": 5}, "grid.steps"),
])
def test_a_bad_grid_key_or_value_names_the_grid_key(grid, field):
    with pytest.raises(SpecError) as err:
        specs({"base": ROSENBROCK, "grid": grid})
    assert err.value.field == field and err.value.status == 400, err.value.message


@pytest.mark.parametrize("request_, field", [
    ({"base": {**ROSENBROCK, "steps": -1}}, "base.steps"),
    ({"base": {**ROSENBROCK, "colour": 1}}, "base.colour"),
    ({"grid": {}}, "base"),
    ({"base": ROSENBROCK, "starts": {"count": 0}}, "starts.count"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "low": 1, "high": 1}}, "starts.high"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "init": "zeros"}}, "starts.init"),
    ({"base": ROSENBROCK, "starts": {"count": 100, "std": 1e11, "init": "normal", "mean": 9.9e11}}, "starts.std"),
    ({"base": ROSENBROCK, "starts": [[1, 2], [1, 2, 3]]}, "starts.1"),
    ({"base": ROSENBROCK, "starts": [[1, float("nan")]]}, "starts.0"),
    ({"base": ROSENBROCK, "tolerance": -1}, "tolerance"),
    ({"base": ROSENBROCK, "tolerance": float("nan")}, "tolerance"),
    ({"base": ROSENBROCK, "surprise": 1}, "surprise"),
])
def test_bad_requests_name_their_field(request_, field):
    with pytest.raises(SpecError) as err:
        specs(request_)
    assert err.value.field == field, err.value.message


def test_a_start_the_objective_cannot_take_names_the_starts():
    with pytest.raises(SpecError) as err:
        specs({"base": {"objective": {"name": "himmelblau"}}, "starts": [[1, 2, 3]]})
    assert err.value.field == "starts"


def test_over_the_job_limit_is_a_413_before_anything_is_expanded():
    request = {"base": ROSENBROCK, "grid": {"optimizer.lr": [0.001] * 100_001}}
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        plan_sweep(request, LIMITS)
    assert time.perf_counter() - start < 0.5
    assert err.value.status == 413 and "DESCENT_MAX_SWEEP_JOBS" in err.value.message
    with pytest.raises(SpecError) as err:  # a huge count is refused from its number alone
        plan_sweep({"base": ROSENBROCK, "starts": {"count": 10**30}}, LIMITS)
    assert err.value.status == 413
    small = replace(LIMITS, max_sweep_jobs=6)
    assert plan_sweep({"base": ROSENBROCK, "grid": {"steps": [1, 2, 3]}, "starts": {"count": 2}}, small).jobs == 6
    with pytest.raises(SpecError):
        plan_sweep({"base": ROSENBROCK, "grid": {"steps": [1, 2, 3]}, "starts": {"count": 3}}, small)


def test_distinct_combinations_are_checked_once():
    calls = []
    import service.spec.sweep as sweep

    original = sweep.check_spec
    sweep.check_spec = lambda data, limits: calls.append(1) or original(data, limits)
    try:
        jobs = specs({"base": ROSENBROCK, "grid": {"optimizer.lr": [0.01, 0.01, 0.02]}, "starts": {"count": 500}})
    finally:
        sweep.check_spec = original
    assert len(jobs) == 1500 and len(calls) == 2


def test_best_minimum_comes_from_the_catalog():
    assert best_minimum({"objective": {"name": "rosenbrock"}}, 2) == 0.0
    assert best_minimum({"objective": {"name": "goldstein_price", "params": {}}}, 2) == 3.0
    assert best_minimum({"objective": {"name": "rosenbrock", "params": {"a": 2.0}}}, 2) is None
    assert best_minimum({"objective": {"name": "loglog"}}, 4) is None
    assert best_minimum({"objective": "(x ** 2).sum()"}, 2) is None


def test_a_starts_count_of_thousands_of_digits_is_a_413_not_a_crash():
    from service.config import Limits
    from service.spec.error import SpecError
    from service.spec.sweep import plan_sweep

    body = {"base": {"objective": {"name": "rosenbrock"}, "steps": 10}, "grid": {"steps": list(range(1, 11))},
            "starts": {"count": 10 ** 4400, "init": "uniform", "low": -1, "high": 1}}
    try:
        plan_sweep(body, Limits())
    except SpecError as exc:
        assert exc.status == 413 and "DESCENT_MAX_SWEEP_JOBS" in exc.message
    else:
        raise AssertionError("accepted")


def test_a_deeper_grid_key_never_rewrites_the_grids_own_values():
    from service.config import Limits
    from service.spec.sweep import expand, job_specs, plan_sweep

    body = {"base": {"objective": {"name": "rosenbrock"}, "steps": 10},
            "grid": {"optimizer": [{"name": "sgd"}, {"name": "adam"}], "optimizer.lr": [0.1, 0.01]}}
    plan = plan_sweep(body, Limits())
    for variant in expand(plan, Limits()):
        list(job_specs(variant))
    assert dict(plan.grid)["optimizer"] == [{"name": "sgd"}, {"name": "adam"}]
