"""Objectives of data: the engine's runs equal a plain torch loop on the same data, alone and in
a batch."""
from __future__ import annotations

import torch

from service.engine import run
from service.spec import check_spec
from tests.engine.test_batched import assert_lane_is_solo, batched
from tests.helpers.line_fit import A, B, line_fit


def plain_torch(optimizer_cls: type, kwargs: dict, steps: int) -> tuple[list[float], float]:
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = optimizer_cls([w], **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((a @ w - b) ** 2).mean()
        loss.backward()
        opt.step()
    w = w.detach()
    return w.tolist(), float(((a @ w - b) ** 2).mean())


def test_sgd_on_data_is_a_plain_torch_loop_bit_for_bit() -> None:
    result = run(check_spec(line_fit({"name": "sgd", "lr": 0.01}, 300)))
    assert (result.x.tolist(), result.f) == plain_torch(torch.optim.SGD, {"lr": 0.01}, 300)


def test_lbfgs_on_data_reaches_the_least_squares_line() -> None:
    result = run(check_spec(line_fit({"name": "lbfgs", "lr": 1}, 20)))
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    best = torch.linalg.lstsq(a, b.reshape(-1, 1)).solution.reshape(-1)
    assert torch.allclose(torch.tensor(result.x, dtype=torch.float64), best, atol=1e-7)
    slope, intercept = result.x.tolist()
    assert abs(slope - 2.5) < 0.1 and abs(intercept + 1) < 0.5


def test_the_catalog_least_squares_job_knows_its_distance_to_the_minimum() -> None:
    spec = {"objective": {"name": "least_squares"}, "data": {"A": A, "b": B}, "optimizer": {"name": "lbfgs", "lr": 1},
            "steps": 20, "dtype": "float64"}
    result = run(check_spec(spec))
    assert result.distance_to_minimum is not None and result.distance_to_minimum < 1e-7


def test_lanes_of_a_batch_read_the_shared_data_and_each_equals_its_solo_run() -> None:
    specs = [{**line_fit({"name": "adam", "lr": 0.05}, 60), "x0": x0} for x0 in ([0.0, 0.0], [5.0, 5.0], [-3.0, 2.0])]
    results, sink = batched(specs)
    for spec, result, rows in zip(specs, results, sink.rows):  # a batched matmul may round its sum apart
        assert_lane_is_solo(spec, result, rows, rel=1e-12)
