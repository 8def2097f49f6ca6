"""The sweep request's model (``service.spec.sweep_request``), which ``plan_sweep`` validates every
request through: each refusal names its field and says that field's rule; what the model keeps is
what the planner plans with; and a base value the grid or the starts replace is checked all the same
(the document describes the base with the job spec's own schema)."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from service.config import Limits
from service.errors import ErrorCode
from service.spec import SpecError
from service.spec.sweep import expand, plan_sweep
from service.spec.sweep_request import (
    REQUEST_FIELDS,
    START_FIELDS,
    RandomStarts,
    SweepRequest,
)

LIMITS = Limits()
ROSENBROCK = {"objective": {"name": "rosenbrock"}, "steps": 5}


def refusal(request: object, limits: Limits = LIMITS) -> SpecError:
    with pytest.raises(SpecError) as err:
        expand(plan_sweep(request, limits), limits)
    return err.value


@pytest.mark.parametrize("request_, field, says", [
    ([1, 2], None, "a sweep must be a JSON object"),
    ({"grid": {}}, "base", "'base' is required"),
    ({"base": [1]}, "base", "'base' must be an object"),
    ({"base": ROSENBROCK, "colour": 1}, "colour", "unknown field 'colour'; a sweep has base, grid, starts"),
    ({"base": ROSENBROCK, "grid": [1]}, "grid", "'grid' must be an object of lists"),
    ({"base": ROSENBROCK, "grid": {f"optimizer.a{i}": [1] for i in range(33)}}, "grid", "'grid' has 33 keys, over 32"),
    ({"base": ROSENBROCK, "grid": {"st\x00eps": [1]}}, "grid", "a key of 'grid' holds a NUL"),
    ({"base": ROSENBROCK, "grid": {"x0": [[1, 2]]}}, "grid.x0", "'x0' is not a key a grid may vary"),
    ({"base": ROSENBROCK, "grid": {"steps\n": [1]}}, "grid.steps\n", "is not a key a grid may vary"),
    ({"base": ROSENBROCK, "grid": {"steps": []}}, "grid.steps", "grid 'steps' must be a non-empty list"),
    ({"base": ROSENBROCK, "starts": []}, "starts", "'starts' as a list needs at least one x0"),
    ({"base": ROSENBROCK, "starts": 3}, "starts", "'starts' must be a list of x0 values or"),
    ({"base": ROSENBROCK, "starts": [[1, 2], 3]}, "starts.1", "every start must be a nested list of numbers"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "colour": 1}}, "starts.colour", "unknown field 'colour' of starts"),
    ({"base": ROSENBROCK, "starts": {}}, "starts.count", "'starts.count' must be an integer of at least 1"),
    ({"base": ROSENBROCK, "starts": {"count": True}}, "starts.count", "an integer of at least 1"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "init": "zeros"}}, "starts.init", "'uniform' or 'normal'"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "low": "a"}}, "starts.low", "a finite number within ±1e+12"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "low": 3}}, "starts.high", "greater than 'starts.low'"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "std": 0}}, "starts.std", "a positive number"),
    ({"base": ROSENBROCK, "starts": {"count": 2, "seed": -1}}, "starts.seed", "an integer from 0 to"),
    ({"base": ROSENBROCK, "tolerance": True}, "tolerance", "a number from 0 to 1e+12"),
    ({"base": ROSENBROCK, "tolerance": float("inf")}, "tolerance", "a number from 0 to 1e+12"),
    ({"base": ROSENBROCK, "name": "n" * 201}, "name", "at most 200 characters"),
    ({"base": ROSENBROCK, "name": "a\x00"}, "name", "with no NUL"),
    ({"base": ROSENBROCK, "tags": {"k": 1}}, "tags", "text values"),
])
def test_each_refusal_names_its_field_and_says_its_rule(request_, field, says):
    err = refusal(request_)
    assert (err.field, err.status) == (field, 400) and says in err.message, err.message


def test_an_unknown_field_is_named_before_any_other_problem():
    err = refusal({"grid": {"steps": []}, "starts": 5, "surprise": 1})
    assert err.field == "surprise"


def test_tags_are_bounded_by_the_configured_limit():
    small = replace(LIMITS, max_tags=2)
    err = refusal({"base": ROSENBROCK, "tags": {"a": "1", "b": "2", "c": "3"}}, small)
    assert err.field == "tags" and err.code == ErrorCode.LIMIT_EXCEEDED and "at most 2" in err.message
    assert plan_sweep({"base": ROSENBROCK, "tags": {"a": "1", "b": "2"}}, small).tags == {"a": "1", "b": "2"}


def test_the_planner_plans_with_what_the_model_kept():
    assert REQUEST_FIELDS == ("base", "grid", "starts", "tolerance", "name", "tags") == tuple(SweepRequest.model_fields)
    assert START_FIELDS == tuple(RandomStarts.model_fields)
    plan = plan_sweep({"base": ROSENBROCK, "starts": {"count": 3, "low": -2}}, LIMITS)
    assert plan.starts == {"count": 3, "init": "uniform", "low": -2, "high": 1.0, "mean": 0.0, "std": 1.0, "seed": 0}
    assert plan.n_starts == 3 and plan.tolerance == 1e-6 and plan.name is None and plan.tags == {}
    starts = [[0.5, 1.5], [1, 2]]
    plan = plan_sweep({"base": ROSENBROCK, "starts": starts, "grid": {"steps": [1, 2]}, "name": "s"}, LIMITS)
    assert plan.start_list == starts and plan.start_list[0] is starts[0]  # taken as they are, not copied
    assert plan.grid == [("steps", [1, 2])] and plan.jobs == 4 and plan.name == "s"


def test_a_hundred_thousand_explicit_starts_are_read_in_milliseconds():
    body = {"base": {"objective": "(x ** 2).sum()", "x0": [1.0] * 20}, "starts": [[0.5] * 20 for _ in range(100_000)]}
    start = time.perf_counter()
    assert plan_sweep(body, LIMITS).jobs == 100_000
    assert time.perf_counter() - start < 0.2


@pytest.mark.parametrize("base, grid, field", [
    ({**ROSENBROCK, "steps": -1}, {"steps": [5]}, "base.steps"),
    ({**ROSENBROCK, "device": "tpu"}, {"device": ["cpu"]}, "base.device"),
    ({**ROSENBROCK, "stop": {"grad_norm": -1}}, {"stop.grad_norm": [0.1]}, "base.stop.grad_norm"),
    ({**ROSENBROCK, "stop": None}, {"stop.grad_norm": [0.1]}, "base.stop"),
    ({**ROSENBROCK, "objective": {"name": "nope"}}, {"objective.name": ["booth"]}, "base.objective.name"),
])
def test_a_base_value_the_grid_replaces_is_checked_all_the_same(base, grid, field):
    err = refusal({"base": base, "grid": grid})
    assert err.field == field and "even where the grid replaces it" in err.message, err.message


def test_a_base_x0_the_starts_replace_must_still_be_an_x0():
    err = refusal({"base": {**ROSENBROCK, "x0": [[1, 2], [3]]}, "starts": [[1, 2]]})
    assert err.field == "base.x0" and "rectangular" in err.message
    # of any shape: the starts give the jobs theirs
    plan = plan_sweep({"base": {**ROSENBROCK, "x0": [1, 2, 3]}, "starts": [[1, 2]]}, LIMITS)
    assert len(expand(plan, LIMITS)) == 1 and "x0" not in plan.stored_base()


def test_the_grid_may_fill_in_what_the_base_leaves_out():
    for request in ({"base": {**ROSENBROCK, "optimizer": {"lr": 0.1}}, "grid": {"optimizer.name": ["sgd", "adam"]}},
                    {"base": {"steps": 5}, "grid": {"objective": [{"name": "booth"}, {"name": "matyas"}]}},
                    {"base": {"objective": "(x ** 2).sum()"}, "starts": [[1, 2]], "grid": {"steps": [1, 2]}}):
        assert len(expand(plan_sweep(request, LIMITS), LIMITS)) == 2
