"""The five cases of the lesson DESIGN.md grew from, reproduced to 4 decimals."""
from __future__ import annotations

import torch

from tests.helpers.engine import run_spec


def close4(a, b) -> bool:
    return torch.allclose(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), atol=5e-5, rtol=0)


def test_case1_gradient_and_graph(lesson_parabola):
    result, rows, _ = run_spec(lesson_parabola)
    x0 = torch.tensor(lesson_parabola["x0"], dtype=torch.float64)
    assert result.steps == 0 and len(rows) == 1
    assert close4(result.grad, (20 * x0).tolist())
    assert result.graph == ["MulBackward0", "SumBackward0", "PowBackward0", "AccumulateGrad"]
    assert result.f == 10 * float((x0 ** 2).sum())


def test_case2_loglog_gradient(lesson_loglog):
    result, _, _ = run_spec({**lesson_loglog, "steps": 0})
    assert close4(result.grad, [[0.0201, 0.0109], [0.0449, 0.0351]])


def test_case3_500_manual_steps(lesson_loglog):
    result, rows, _ = run_spec(lesson_loglog)
    assert close4(result.x, [[4.9900, 9.9948], [0.9775, 1.9825]])
    assert len(rows) == 501 and [r["step"] for r in rows] == list(range(501))


def test_case4_optim_sgd_equals_manual_update(lesson_loglog):
    w = torch.tensor([[5.0, 10.0], [1.0, 2.0]], requires_grad=True)
    for _ in range(500):
        f = torch.log(torch.log(w + 7)).prod()
        f.backward()
        w.data -= 0.001 * w.grad
        w.grad.zero_()
    result, _, _ = run_spec(lesson_loglog)
    assert torch.allclose(torch.tensor(result.x.tolist()), w.detach(), rtol=1e-6, atol=0)


def test_case5_trajectory_recorded_every_step():
    spec = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500,
            "optimizer": {"name": "sgd", "lr": 0.001}}
    result, rows, _ = run_spec(spec)
    x = torch.tensor([8.0, 8.0], requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.001)
    var_history, fn_history = [], []
    for _ in range(500):
        opt.zero_grad()
        f = 10 * (x ** 2).sum()
        f.backward()
        var_history.append(x.detach().clone())
        fn_history.append(f.item())
        opt.step()
    assert len(rows) == 501
    for t in range(500):
        assert rows[t]["x"] == var_history[t].tolist()
        assert rows[t]["f"] == fn_history[t]
    assert close4(result.x, x.detach().tolist())
    assert rows[-1]["step"] == 500 and rows[-1]["x"] == x.detach().tolist()
