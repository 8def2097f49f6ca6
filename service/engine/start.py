"""The starting point x0 as a tensor: the spec's nested list, or a seeded random start."""
from __future__ import annotations

import torch

from service.spec import CheckedSpec, InitSpec


def initial_point(checked: CheckedSpec, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """x0 on ``device``; random starts are drawn on the CPU so every device sees the same x0."""
    x0 = checked.x0
    if not isinstance(x0, InitSpec):
        return torch.tensor(x0, dtype=torch.float64).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(x0.seed if x0.seed is not None else checked.spec.seed)
    shape = tuple(x0.shape)
    if x0.init == "zeros":
        out = torch.zeros(shape, dtype=torch.float64)
    elif x0.init == "ones":
        out = torch.ones(shape, dtype=torch.float64)
    elif x0.init == "uniform":
        out = torch.rand(shape, generator=gen, dtype=torch.float64) * (x0.high - x0.low) + x0.low
    else:
        out = torch.randn(shape, generator=gen, dtype=torch.float64) * x0.std + x0.mean
    return out.to(device=device, dtype=dtype)
