"""A job's starting point x0 as a float64 CPU tensor: its nested list, or its seeded random draw.

One definition, so the engine (which moves it to the job's device and dtype) and a sweep (which
writes each job's x0 out explicitly) always agree on the point a generated start means.
"""
from __future__ import annotations

import torch

from service.spec.model import InitSpec
from service.spec.validate import CheckedSpec


def start_tensor(checked: CheckedSpec) -> torch.Tensor:
    """x0 in float64 on the CPU; random starts are drawn there so every device sees the same x0."""
    x0 = checked.x0
    if not isinstance(x0, InitSpec):
        return torch.tensor(x0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(x0.seed if x0.seed is not None else checked.spec.seed)
    shape = tuple(x0.shape)
    if x0.init == "zeros":
        return torch.zeros(shape, dtype=torch.float64)
    if x0.init == "ones":
        return torch.ones(shape, dtype=torch.float64)
    if x0.init == "uniform":
        return torch.rand(shape, generator=gen, dtype=torch.float64) * (x0.high - x0.low) + x0.low
    return torch.randn(shape, generator=gen, dtype=torch.float64) * x0.std + x0.mean
