"""What a run hands out: history chunks as it goes, and a result at the end."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from service.rows import HistoryRows, Progress
from service.status import StopReason
from service.spec import CheckedSpec
from service.spec.minima import known_minima


@dataclass(frozen=True)
class Chunk:
    """What the run hands out between steps: the rows recorded for steps in ``[start, end)``
    (``end`` inclusive when ``final``), and a ``checkpoint`` (serialised ``Checkpoint``) that
    resumes the run at step ``end`` (None on the final chunk and between checkpoints; see
    ``Chunking.checkpoint_seconds``), and where the run stands (``progress``)."""

    start: int
    end: int
    rows: HistoryRows
    checkpoint: bytes | None
    final: bool
    progress: Progress | None = None


@dataclass(frozen=True)
class Result:
    """The end of a run, and why it ended: ``x`` (and ``grad``, when recorded) as float64 arrays
    of x's shape, so a big one is never a list of a million floats on its way to the store."""

    x: np.ndarray
    f: float
    grad_norm: float
    steps: int
    stop_reason: StopReason
    graph: list[str]
    device: str
    seconds: float
    grad: np.ndarray | None = None
    distance_to_minimum: float | None = None
    device_name: str | None = None  # the CUDA device's name, or the processor's

    def as_json(self, tensors: bool = True) -> dict[str, Any]:
        """The result as JSON-ready values; without x and grad when not ``tensors``."""
        out: dict[str, Any] = {
            "f": self.f, "grad_norm": self.grad_norm, "steps": self.steps,
            "stop_reason": self.stop_reason, "graph": self.graph, "device": self.device,
            "device_name": self.device_name, "seconds": self.seconds,
        }
        if tensors:
            out["x"] = self.x.tolist()
        if tensors and self.grad is not None:
            out["grad"] = self.grad.tolist()
        if self.distance_to_minimum is not None:
            out["distance_to_minimum"] = self.distance_to_minimum
        return out


def make_result(checked: CheckedSpec, x: torch.Tensor, grad: torch.Tensor | None, fv: float, t: int,
                reason: StopReason, graph: list[str], dev: torch.device, seconds: float) -> Result:
    """The result of a run that ended at x (= x_t, with its gradient ``grad``) after ``t`` steps."""
    spec = checked.spec
    with_grad = spec.steps == 0 or spec.record.grad
    return Result(
        x=_array(x),
        f=fv,
        grad_norm=float(torch.linalg.vector_norm(grad)) if grad is not None else float("nan"),
        steps=t,
        stop_reason=reason,
        graph=graph,
        device=str(dev),
        seconds=round(seconds, 6),
        grad=_array(grad) if with_grad and grad is not None else None,
        distance_to_minimum=_distance(checked, x),
        device_name=device_name(dev),
    )


def _array(t: torch.Tensor) -> np.ndarray:
    """A tensor as a float64 CPU array of its own (float32 values are exact in float64)."""
    return t.detach().to("cpu", torch.float64).numpy().copy()


@functools.cache
def device_name(dev: torch.device) -> str:
    """The name of the device a run used: the CUDA device's, or the processor's."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine() or "cpu"


def _distance(checked: CheckedSpec, x: torch.Tensor) -> float | None:
    if checked.catalog is None:
        return None
    flat = x.detach().to("cpu", torch.float64).reshape(-1)
    minima = known_minima(checked, flat.numel())
    if not minima:
        return None
    return min(float(torch.linalg.vector_norm(flat - torch.tensor(loc, dtype=torch.float64)))
               for loc, _ in minima)
