"""The lesson, extended: 100 noisy points on the line y = 2.5 t - 1, to fit a line to."""
from __future__ import annotations

from typing import Any

import torch

_GEN = torch.Generator().manual_seed(2026)
_T = torch.rand(100, generator=_GEN, dtype=torch.float64) * 10
_Y = 2.5 * _T - 1 + 0.5 * torch.randn(100, generator=_GEN, dtype=torch.float64)

# Rows [t, 1] (slope and intercept), and the measured y.
A: list[list[float]] = torch.stack([_T, torch.ones(100, dtype=torch.float64)], 1).tolist()
B: list[float] = _Y.tolist()


def line_fit(optimizer: dict[str, Any], steps: int, **extra: Any) -> dict[str, Any]:
    """A job fitting [slope, intercept] to the points by least squares."""
    return {"objective": "((A @ w - b) ** 2).mean()", "variable": "w", "x0": [0.0, 0.0], "data": {"A": A, "b": B},
            "optimizer": optimizer, "steps": steps, "dtype": "float64", **extra}
