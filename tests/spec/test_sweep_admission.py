"""A sweep's cost known from its sizes, before it is expanded (``service.spec.sweep.admit``): its
jobs, the history values they reserve (exact, or a lower bound where the grid varies what a job
records) and its x0 numbers; the grid's combinations and the x0 numbers capped at admission."""
from __future__ import annotations

import pytest

from service.spec import sweep
from service.config import Limits
from service.spec import SpecError
from service.spec.sweep import MAX_GRID_COMBINATIONS, admit, expand, plan_sweep

LIMITS = Limits()
ROSENBROCK = {"objective": {"name": "rosenbrock"}, "steps": 50, "record": {"every": 10}}


@pytest.fixture
def never_expanded(monkeypatch):  # type: ignore[no-untyped-def]
    """Admission must not expand: the expansion and the per-combination loop fail the test if called."""
    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("expanded")
    monkeypatch.setattr(sweep, "expand", boom)
    monkeypatch.setattr(sweep, "job_specs", boom)


def _expanded_values(request: dict) -> int:
    plan = plan_sweep(request, LIMITS)
    return sum(v.checked.recorded_values * len(v.starts) for v in expand(plan, LIMITS))


@pytest.mark.parametrize("request_", [
    {"base": ROSENBROCK, "grid": {"optimizer.name": ["sgd", "adam"], "optimizer.lr": [0.001, 0.01]},
     "starts": {"count": 7}},
    {"base": {**ROSENBROCK, "record": {"every": 3, "grad": True}}, "starts": [[1, 2], [3, 4], [5, 6]]},
    {"base": {"objective": "(x ** 2).sum()", "x0": [1.0, 2.0, 3.0], "steps": 9}},
])
def test_values_are_exact_when_the_grid_varies_nothing_a_job_records(request_):
    admission = admit(plan_sweep(request_, LIMITS), LIMITS)
    assert admission.values_exact and admission.values == _expanded_values(request_)
    assert admission.jobs == plan_sweep(request_, LIMITS).jobs


@pytest.mark.parametrize("grid", [{"steps": [500, 5]}, {"record.every": [1, 50]}, {"record.x": [True, False]},
                                  {"record": [{"every": 1}, {"every": 2, "x": False}]},
                                  {"objective.name": ["rosenbrock", "himmelblau"]}])
def test_values_are_a_lower_bound_when_the_grid_varies_what_a_job_records(grid):
    request = {"base": ROSENBROCK, "grid": grid, "starts": {"count": 3}}
    admission = admit(plan_sweep(request, LIMITS), LIMITS)
    assert not admission.values_exact and 0 < admission.values <= _expanded_values(request)


def test_a_grid_of_too_many_combinations_is_a_413_from_its_sizes(never_expanded):
    request = {"base": ROSENBROCK, "grid": {"optimizer.lr": [0.001 * (i + 1) for i in range(MAX_GRID_COMBINATIONS + 1)]}}
    with pytest.raises(SpecError) as err:
        plan_sweep(request, LIMITS)
    assert err.value.status == 413 and err.value.field == "grid" and f"{MAX_GRID_COMBINATIONS:,}" in err.value.message
    request = {"base": ROSENBROCK, "grid": {"optimizer.lr": [0.01] * 100, "optimizer.momentum": [0.0] * 101}}
    with pytest.raises(SpecError) as err:
        plan_sweep(request, LIMITS)
    assert err.value.status == 413 and "combinations" in err.value.message
    assert plan_sweep({"base": ROSENBROCK, "grid": {"optimizer.lr": [0.01] * 100}, "starts": {"count": 1000}},
                      LIMITS).jobs == 100_000  # the jobs beyond the cap come from starts


def test_too_many_x0_numbers_are_a_413_at_admission(never_expanded):
    request = {"base": {"objective": "(x ** 2).sum()", "x0": {"shape": [1000], "init": "ones"}, "steps": 1},
               "grid": {"optimizer.lr": [0.1, 0.2, 0.3]}, "starts": {"count": 1000}}
    with pytest.raises(SpecError) as err:
        admit(plan_sweep(request, LIMITS), LIMITS)
    assert err.value.status == 413 and err.value.field == "starts" and "2,000,000" in err.value.message


def test_the_first_combination_is_refused_as_expand_would_refuse_it(never_expanded):
    with pytest.raises(SpecError) as err:
        admit(plan_sweep({"base": ROSENBROCK, "grid": {"optimizer.lr": [-1, 0.1]}}, LIMITS), LIMITS)
    assert err.value.field == "grid.optimizer.lr"
    with pytest.raises(SpecError) as err:
        admit(plan_sweep({"base": ROSENBROCK, "starts": [[1, 2], [1]]}, LIMITS), LIMITS)
    assert err.value.field == "starts.1"
