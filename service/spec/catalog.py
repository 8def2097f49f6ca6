"""Named test objectives, written in the objective language, with their known minima.

Formulas and minima follow the standard optimisation test-function literature (Jamil & Yang,
"A literature survey of benchmark functions for global optimization problems", 2013; Surjanovic &
Bingham's Virtual Library of Simulation Experiments). Each minimum is verified in
``tests/spec/test_catalog.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

Minimum = tuple[list[float], float]  # (flat location, value)
Shapes = Mapping[str, tuple[int, ...]]
Data = Mapping[str, torch.Tensor]  # float64 CPU tensors by name


@dataclass(frozen=True)
class CatalogObjective:
    """One named objective: a formula template over ``x`` with ``{param}`` placeholders."""

    name: str
    formula: str
    description: str
    default_start: list[float] | list[list[float]]
    params: dict[str, float] = field(default_factory=dict)
    min_elements: int = 2
    max_elements: int | None = 2
    minima: Callable[[int, dict[str, float]], list[Minimum]] = lambda n, p: []
    # Objectives of data: the tensors a spec must give in ``data``, x0 when the spec gives none
    # (from the data's shapes), and the minima for given data (float64, on the CPU).
    data: tuple[str, ...] = ()
    data_start: Callable[[Shapes], list[float]] | None = None
    data_minima: Callable[[Data, dict[str, float]], list[Minimum]] | None = None

    def expression(self, params: dict[str, float]) -> str:
        """The formula with ``params`` (over the defaults) written in as numbers."""
        values = {**self.params, **params}
        return self.formula.format(**{k: repr(float(v)) for k, v in values.items()})

    def start(self, data: Shapes) -> list[float] | list[list[float]]:
        """x0 when a spec gives none: the default start, or one made from the data's shapes."""
        return self.data_start(data) if self.data_start is not None else self.default_start

    def known_minima(self, n: int, params: dict[str, float], data: Data | None = None) -> list[Minimum]:
        """The minima for ``n`` elements and ``params`` (over the defaults), and the data if it reads any."""
        values = {**self.params, **params}
        if self.data_minima is not None:
            return self.data_minima(data, values) if data else []
        return self.minima(n, values)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "formula": self.formula,
            "description": self.description,
            "params": dict(self.params),
            "default_start": self.default_start,
            "elements": {"min": self.min_elements, "max": self.max_elements},
            "minima": [{"x": x, "f": f} for x, f in self.known_minima(_default_n(self), {})],
            "data": list(self.data),
        }


def _default_n(obj: CatalogObjective) -> int:
    start = obj.default_start
    return sum(len(r) for r in start) if start and isinstance(start[0], list) else len(start)


def _at(point: Callable[[int], list[float]], value: Callable[[int], float]) -> Callable[[int, dict[str, float]], list[Minimum]]:
    return lambda n, p: [(point(n), value(n))]


def _least_squares_minimum(data: Data, p: dict[str, float]) -> list[Minimum]:
    """The least-squares solution of A x = b (the least-norm one when A has dependent columns)."""
    a, b = data["A"], data["b"]
    x = torch.linalg.lstsq(a, b.reshape(-1, 1), driver="gelsd").solution.reshape(-1)
    return [(x.tolist(), float(((a @ x - b.reshape(-1)) ** 2).mean()))]


def _logistic_minimum(data: Data, p: dict[str, float]) -> list[Minimum]:
    """The one minimum of L2-regularised logistic loss (strictly convex for l2 > 0), by Newton's
    method in float64 until the gradient is below 1e-13."""
    a, y, l2 = data["A"], data["y"].reshape(-1), p["l2"]
    if l2 <= 0:
        return []  # separable data has no finite minimum without the penalty
    m, n = a.shape
    w = torch.zeros(n, dtype=torch.float64)
    for _ in range(100):
        prob = torch.sigmoid(a @ w)
        grad = a.T @ (prob - y) / m + l2 * w
        if float(grad.abs().max()) < 1e-13:
            break
        hess = a.T @ (a * (prob * (1 - prob)).reshape(-1, 1)) / m + l2 * torch.eye(n, dtype=torch.float64)
        w = w - torch.linalg.solve(hess, grad)
    z = a @ w
    f = torch.nn.functional.softplus(z) - y * z
    return [(w.tolist(), float(f.mean() + l2 / 2 * (w ** 2).sum()))]


def _zeros_for_columns(shapes: Shapes) -> list[float]:
    """x0 of zeros, one per column of A."""
    a = shapes.get("A", (1, 1))
    return [0.0] * (a[1] if len(a) == 2 else 1)


_ST_X = -2.903534027771178
_ST_F = 0.5 * (_ST_X**4 - 16 * _ST_X**2 + 5 * _ST_X)

_OBJECTIVES = [
    CatalogObjective(
        "parabola", "{scale} * sum(x ** 2)",
        "The lesson's bowl, 10 * sum(x**2); any number of elements.",
        [8.0, 8.0], {"scale": 10.0}, 1, None,
        _at(lambda n: [0.0] * n, lambda n: 0.0),
    ),
    CatalogObjective(
        "skewed_parabola", "{a} * x[0] ** 2 + {b} * x[1] ** 2 + {c} * x[0] * x[1]",
        "A rotated, ill-conditioned bowl: a*x0^2 + b*x1^2 + c*x0*x1 (needs 4ab > c^2).",
        [8.0, 8.0], {"a": 1.0, "b": 10.0, "c": -4.0}, 2, 2,
        _at(lambda n: [0.0, 0.0], lambda n: 0.0),
    ),
    CatalogObjective(
        "rosenbrock", "sum({b} * (x[1:] - x[:-1] ** 2) ** 2 + ({a} - x[:-1]) ** 2)",
        "Rosenbrock's banana valley, n-dimensional; minimum at (a, a^2, ...) = ones for a = 1.",
        [-1.2, 1.0], {"a": 1.0, "b": 100.0}, 2, None,
        lambda n, p: [([1.0] * n, 0.0)] if p.get("a", 1.0) == 1.0 else [],
    ),
    CatalogObjective(
        "rastrigin", "sum(x ** 2 - {A} * cos(2 * pi * x) + {A})",
        "Rastrigin's egg-crate: many local minima, global minimum 0 at the origin.",
        [2.5, 2.5], {"A": 10.0}, 1, None,
        _at(lambda n: [0.0] * n, lambda n: 0.0),
    ),
    CatalogObjective(
        "himmelblau", "(x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2",
        "Himmelblau's function: four global minima of value 0.",
        [0.0, 0.0], {}, 2, 2,
        lambda n, p: [
            ([3.0, 2.0], 0.0),
            ([-2.805118086952745, 3.131312518250573], 0.0),
            ([-3.779310253377747, -3.283185991286170], 0.0),
            ([3.584428340330492, -1.848126526964404], 0.0),
        ],
    ),
    CatalogObjective(
        "beale",
        "(1.5 - x[0] + x[0] * x[1]) ** 2 + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2"
        " + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2",
        "Beale's function: a flat valley; minimum 0 at (3, 0.5).",
        [1.0, 1.0], {}, 2, 2, _at(lambda n: [3.0, 0.5], lambda n: 0.0),
    ),
    CatalogObjective(
        "booth", "(x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2",
        "Booth's function: a plate-shaped bowl; minimum 0 at (1, 3).",
        [0.0, 0.0], {}, 2, 2, _at(lambda n: [1.0, 3.0], lambda n: 0.0),
    ),
    CatalogObjective(
        "ackley",
        "-{a} * exp(-{b} * sqrt(mean(x ** 2))) - exp(mean(cos({c} * x))) + {a} + e",
        "Ackley's function: a needle at the origin (f = 0) in a bumpy plain; not differentiable "
        "exactly at the minimum.",
        [1.5, 1.5], {"a": 20.0, "b": 0.2, "c": 2 * math.pi}, 1, None,
        _at(lambda n: [0.0] * n, lambda n: 0.0),
    ),
    CatalogObjective(
        "styblinski_tang", "sum(x ** 4 - 16 * x ** 2 + 5 * x) / 2",
        "Styblinski-Tang: minimum about -39.166 n at x_i = -2.903534.",
        [0.0, 0.0], {}, 1, None,
        _at(lambda n: [_ST_X] * n, lambda n: _ST_F * n),
    ),
    CatalogObjective(
        "matyas", "0.26 * (x[0] ** 2 + x[1] ** 2) - 0.48 * x[0] * x[1]",
        "Matyas' function: a shallow, long valley; minimum 0 at the origin.",
        [5.0, -5.0], {}, 2, 2, _at(lambda n: [0.0, 0.0], lambda n: 0.0),
    ),
    CatalogObjective(
        "goldstein_price",
        "(1 + (x[0] + x[1] + 1) ** 2 * (19 - 14 * x[0] + 3 * x[0] ** 2 - 14 * x[1]"
        " + 6 * x[0] * x[1] + 3 * x[1] ** 2)) * (30 + (2 * x[0] - 3 * x[1]) ** 2"
        " * (18 - 32 * x[0] + 12 * x[0] ** 2 + 48 * x[1] - 36 * x[0] * x[1] + 27 * x[1] ** 2))",
        "Goldstein-Price: minimum 3 at (0, -1), several local minima.",
        [0.5, 0.5], {}, 2, 2, _at(lambda n: [0.0, -1.0], lambda n: 3.0),
    ),
    CatalogObjective(
        "three_hump_camel",
        "2 * x[0] ** 2 - 1.05 * x[0] ** 4 + x[0] ** 6 / 6 + x[0] * x[1] + x[1] ** 2",
        "Three-hump camel: three local minima; global minimum 0 at the origin.",
        [2.0, 2.0], {}, 2, 2, _at(lambda n: [0.0, 0.0], lambda n: 0.0),
    ),
    CatalogObjective(
        "least_squares", "mean((A @ x - b) ** 2)",
        "Fit x to data: the mean squared residual of A x = b, for A (points x features) and b (points) "
        "given in 'data'; minimum from the least-squares solution.",
        [0.0, 0.0], {}, 1, None, data=("A", "b"), data_start=_zeros_for_columns,
        data_minima=_least_squares_minimum,
    ),
    CatalogObjective(
        "logistic_regression", "mean(softplus(A @ x) - y * (A @ x)) + {l2} / 2 * sum(x ** 2)",
        "Classify with a line: L2-regularised logistic loss of weights x, for features A (points x "
        "features) and labels y (0 or 1) given in 'data'; minimum by Newton's method.",
        [0.0, 0.0], {"l2": 0.01}, 1, None, data=("A", "y"), data_start=_zeros_for_columns,
        data_minima=_logistic_minimum,
    ),
    CatalogObjective(
        "loglog", "prod(log(log(x + 7)))",
        "The lesson's second function, prod(log(log(x + 7))); no finite minimum.",
        [[5.0, 10.0], [1.0, 2.0]], {}, 1, None,
    ),
]

CATALOG: dict[str, CatalogObjective] = {o.name: o for o in _OBJECTIVES}
