"""A job's starting point x0 and its data tensors as float64 CPU tensors: nested lists, or
seeded random draws.

One definition, so the engine (which moves them to the job's device and dtype) and a sweep (which
writes each job's x0 out explicitly) always agree on the tensor a generated one means.
"""
from __future__ import annotations

from typing import Any

import torch

from service.spec.model import InitSpec
from service.spec.validate import CheckedSpec

# A generated data tensor's seed when it names none: not the job's seed, which differs between
# the jobs of a sweep (and of a batch), which all read the same data.
DATA_SEED = 0


def start_tensor(checked: CheckedSpec) -> torch.Tensor:
    """x0 in float64 on the CPU; random starts are drawn there so every device sees the same x0."""
    return _tensor(checked.x0, checked.spec.seed)


def data_tensors(checked: CheckedSpec) -> dict[str, torch.Tensor]:
    """The data tensors the objective reads, by name, in float64 on the CPU."""
    return {name: _tensor(entry, DATA_SEED) for name, entry in checked.data.items()}


def data_tensor(entry: list[Any] | dict[str, Any]) -> torch.Tensor:
    """One data entry of a stored spec (a nested list, or a generated tensor's fields) as the
    float64 CPU tensor a job reads."""
    return _tensor(InitSpec.model_validate(entry) if isinstance(entry, dict) else entry, DATA_SEED)


def _tensor(value: list[Any] | InitSpec, default_seed: int) -> torch.Tensor:
    if not isinstance(value, InitSpec):
        return torch.tensor(value, dtype=torch.float64)
    gen = torch.Generator().manual_seed(value.seed if value.seed is not None else default_seed)
    shape = tuple(value.shape)
    if value.init == "zeros":
        return torch.zeros(shape, dtype=torch.float64)
    if value.init == "ones":
        return torch.ones(shape, dtype=torch.float64)
    if value.init == "uniform":
        return torch.rand(shape, generator=gen, dtype=torch.float64) * (value.high - value.low) + value.low
    return torch.randn(shape, generator=gen, dtype=torch.float64) * value.std + value.mean
