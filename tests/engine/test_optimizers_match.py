"""For every allow-listed optimiser the engine's history equals a hand-written torch loop."""
from __future__ import annotations

import pytest
import torch

from service.spec.optimizers import OPTIMIZERS
from tests.helpers.engine import run_spec

ROSENBROCK = "100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2"

CASES: dict[str, dict] = {
    "sgd": {"lr": 1e-4},
    "adam": {"lr": 0.01},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "adamax": {"lr": 0.01},
    "nadam": {"lr": 0.01},
    "radam": {"lr": 1e-4},
    "rmsprop": {"lr": 0.001, "momentum": 0.5},
    "adagrad": {"lr": 0.1},
    "adadelta": {"lr": 1.0},
    "asgd": {"lr": 1e-4},
    "rprop": {"lr": 0.001},
    "lbfgs": {"lr": 0.5, "max_iter": 5, "history_size": 5},
}
EXTRA = [
    ("sgd", {"lr": 1e-4, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("sgd", {"lr": 1e-4, "momentum": 0.9, "nesterov": True}),
    ("adam", {"lr": 0.01, "amsgrad": True, "betas": [0.8, 0.99]}),
    ("lbfgs", {"lr": 1, "line_search_fn": "strong_wolfe"}),
]


def reference(name: str, kwargs: dict, dtype: torch.dtype, steps: int) -> tuple[list, list]:
    x = torch.tensor([-1.2, 1.0], dtype=dtype, requires_grad=True)
    cls = getattr(torch.optim, OPTIMIZERS[name])
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    opt = cls([x], **kw)

    def f() -> torch.Tensor:
        return 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2

    xs, fs = [], []
    for t in range(steps + 1):
        opt.zero_grad()
        loss = f()
        loss.backward()
        xs.append(x.detach().clone().tolist())
        fs.append(loss.item())
        if t == steps:
            break
        if name == "lbfgs":
            def closure() -> torch.Tensor:
                opt.zero_grad()
                out = f()
                out.backward()
                return out
            opt.step(closure)
        else:
            opt.step()
    return xs, fs


def assert_same(rows: list[dict], xs: list, fs: list) -> None:
    assert len(rows) == len(xs)
    got_x = torch.tensor([r["x"] for r in rows], dtype=torch.float64)
    got_f = torch.tensor([r["f"] for r in rows], dtype=torch.float64)
    torch.testing.assert_close(got_x, torch.tensor(xs, dtype=torch.float64), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(got_f, torch.tensor(fs, dtype=torch.float64), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,kwargs", [(n, k) for n, k in CASES.items()] + EXTRA,
                         ids=[n for n in CASES] + [f"{n}-extra{i}" for i, (n, _) in enumerate(EXTRA)])
def test_engine_equals_hand_loop(name, kwargs, dtype):
    steps = 20 if name == "lbfgs" else 60
    spec = {"objective": ROSENBROCK, "x0": [-1.2, 1.0], "steps": steps, "dtype": dtype,
            "optimizer": {"name": name, **kwargs}}
    _, rows, _ = run_spec(spec)
    xs, fs = reference(name, kwargs, getattr(torch, dtype), steps)
    assert_same(rows, xs, fs)


def test_every_allow_listed_optimizer_is_covered():
    assert set(CASES) == set(OPTIMIZERS)
