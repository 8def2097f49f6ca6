"""The starting point x0 and the data tensors on the job's device and in its dtype."""
from __future__ import annotations

import torch

from service.spec import CheckedSpec
from service.spec.start import data_tensors, start_tensor


def initial_point(checked: CheckedSpec, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """x0 on ``device`` (drawn on the CPU by ``service.spec.start``, so every device sees the same x0)."""
    return start_tensor(checked).to(device=device, dtype=dtype)


def job_data(checked: CheckedSpec, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """The data tensors the objective reads, on ``device`` in ``dtype``."""
    return {name: t.to(device=device, dtype=dtype) for name, t in data_tensors(checked).items()}
