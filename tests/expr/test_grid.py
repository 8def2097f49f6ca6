"""The objective on a grid (``service.expr.grid``): each value is the objective at its point."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from service.expr.grid import GridTooSlow, evaluate_grid, padded_range
from service.expr import compile_expression
from service.spec import check_spec
from service.spec.start import start_tensor
from tests.helpers.lesson import LESSON_LOGLOG


def direct(objective, base: torch.Tensor, coords: tuple[int, int], a: float, b: float) -> float:  # type: ignore[no-untyped-def]
    point = base.clone().reshape(-1)
    point[coords[0]], point[coords[1]] = a, b
    return float(objective(point.reshape(base.shape)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lesson_grid_values_are_the_objective_at_each_point(dtype):
    checked = check_spec(dict(LESSON_LOGLOG))
    objective = compile_expression(checked.expression)
    base = start_tensor(checked).to(dtype)
    xs, ys = np.linspace(4.0, 6.0, 7), np.linspace(9.0, 11.0, 5)
    grid = evaluate_grid(objective, base, (0, 1), xs, ys)
    assert grid.coords == (0, 1) and grid.f.shape == (5, 7)  # rows follow y
    assert np.array_equal(grid.xs, xs) and np.array_equal(grid.ys, ys)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    for r, c in [(0, 0), (0, 6), (4, 0), (2, 3), (4, 6), (1, 5)]:
        assert grid.f[r, c] == pytest.approx(direct(objective, base, (0, 1), xs[c], ys[r]), rel=tolerance)
    # the corner is not symmetric in the two coordinates: rows really are y
    assert grid.f[0, 6] != pytest.approx(grid.f[6 % 5, 0], rel=1e-3)


def test_catalog_rosenbrock_with_three_elements_and_chosen_coords():
    checked = check_spec({"objective": {"name": "rosenbrock", "params": {"b": 50}}, "x0": [-1.2, 1.0, 0.5],
                          "dtype": "float64"})
    objective = compile_expression(checked.expression)
    base = start_tensor(checked)
    xs, ys = np.linspace(-2, 2, 9), np.linspace(-1, 3, 11)
    grid = evaluate_grid(objective, base, (0, 2), xs, ys)
    assert grid.coords == (0, 2) and grid.f.shape == (11, 9)

    def rosenbrock(v: list[float]) -> float:
        return sum(50 * (v[k + 1] - v[k] ** 2) ** 2 + (1 - v[k]) ** 2 for k in range(len(v) - 1))

    for r in range(11):
        for c in range(9):
            # element 1 stays at the base's 1.0
            assert grid.f[r, c] == pytest.approx(rosenbrock([xs[c], 1.0, ys[r]]), rel=1e-12)
    swapped = evaluate_grid(objective, base, (2, 0), ys, xs)
    assert np.allclose(swapped.f, grid.f.T, rtol=1e-12)


def test_an_objective_that_vmap_cannot_map_is_evaluated_point_by_point():
    calls = []

    def reads_a_value(x: torch.Tensor) -> torch.Tensor:  # .item() cannot run under vmap
        calls.append(1)
        return torch.tensor(x.reshape(-1)[0].item() ** 2 + 3 * x.reshape(-1)[1].item())

    base = torch.zeros(3, dtype=torch.float64)
    grid = evaluate_grid(reads_a_value, base, (0, 1), [1.0, 2.0, 3.0], [10.0, 20.0])
    assert grid.f.tolist() == [[31.0, 34.0, 39.0], [61.0, 64.0, 69.0]]
    assert len(calls) >= 6


def test_non_finite_values_stay_in_the_grid():
    objective = compile_expression(check_spec({"objective": "log(x).sum()", "x0": [1.0, 1.0]}).expression)
    grid = evaluate_grid(objective, torch.ones(2), (0, 1), [-1.0, 0.0, 1.0], [1.0])
    assert math.isnan(grid.f[0, 0]) and grid.f[0, 1] == -math.inf and grid.f[0, 2] == 0.0


def test_coords_must_be_two_different_indices_in_x():
    objective = compile_expression(check_spec({"objective": "x.sum()", "x0": [1.0, 1.0]}).expression)
    for coords in [(0, 0), (0, 2), (-1, 0)]:
        with pytest.raises(ValueError, match="coords"):
            evaluate_grid(objective, torch.ones(2), coords, [0.0, 1.0], [0.0, 1.0])


def test_time_budget_is_kept():
    objective = compile_expression(check_spec({"objective": "x.sum()", "x0": [1.0, 1.0]}).expression)
    with pytest.raises(GridTooSlow):
        evaluate_grid(objective, torch.ones(2), (0, 1), np.linspace(0, 1, 50), np.linspace(0, 1, 50),
                      chunk_bytes=1, max_seconds=0.0)


def test_small_chunks_give_the_same_grid():
    objective = compile_expression(check_spec({"objective": "(x ** 2).sum() + x[0] * x[1]", "x0": [1.0, 1.0, 2.0]}).expression)
    base = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    whole = evaluate_grid(objective, base, (1, 2), np.linspace(-1, 1, 13), np.linspace(-2, 2, 17))
    pieces = evaluate_grid(objective, base, (1, 2), np.linspace(-1, 1, 13), np.linspace(-2, 2, 17), chunk_bytes=100)
    assert np.array_equal(whole.f, pieces.f)


def test_padded_range():
    assert padded_range([0.0, 10.0, 4.0], 0.1) == pytest.approx((-1.0, 11.0))
    assert padded_range([0.2, 0.2, math.nan], 0.1) == pytest.approx((-0.3, 0.7))  # no width: at least 1
    assert padded_range([3.0, 3.0], 0.1) == pytest.approx((2.25, 3.75))  # or half the value
    lo, hi = padded_range([100.0], 0.1)
    assert lo < 100.0 < hi and hi - lo == pytest.approx(50.0)
    assert padded_range([math.inf, math.nan]) == (-0.5, 0.5)
    lo, hi = padded_range([-1e300, 1e300])
    assert math.isfinite(lo) and math.isfinite(hi) and lo < hi
