"""Where a job runs: the spec's device word mapped to a torch device, refusing silent fallbacks."""
from __future__ import annotations

import torch

from service.errors import DescentError, ErrorCode


class EngineError(DescentError):
    """A job that cannot run as asked; the message is shown to the user as is."""

    code = ErrorCode.JOB_CANNOT_RUN


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(requested: str) -> torch.device:
    """``cpu`` | ``gpu`` | ``auto`` (or a torch device string) to a torch device. A CUDA device
    always carries its index (``cuda:0``), so a result says which GPU of the worker ran it."""
    if requested in ("gpu", "cuda") or requested.startswith("cuda:"):
        if not cuda_available():
            raise EngineError(f"device '{requested}' was asked for, but this machine has no CUDA device")
        return _indexed(torch.device("cuda" if requested == "gpu" else requested))
    if requested == "auto":
        return _indexed(torch.device("cuda")) if cuda_available() else torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    raise EngineError(f"unknown device '{requested}'")


def _indexed(dev: torch.device) -> torch.device:
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
