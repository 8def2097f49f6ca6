"""What a run hands out: history chunks as it goes, and a result at the end."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch


@dataclass(frozen=True)
class Chunk:
    """Recorded rows for steps in ``[start, end)`` (``end`` inclusive when ``final``).

    ``x`` and ``grad`` are float64 CPU tensors of shape (rows, numel) when recorded.
    ``checkpoint`` (serialised ``Checkpoint``) resumes the run at step ``end``; None on the
    final chunk and on chunks between checkpoints (see ``run(checkpoint_seconds=...)``).
    """

    start: int
    end: int
    steps: list[int]
    f: list[float]
    grad_norm: list[float]
    lr: list[float]
    x: torch.Tensor | None
    grad: torch.Tensor | None
    checkpoint: bytes | None
    final: bool

    def __len__(self) -> int:
        return len(self.steps)

    def rows(self) -> list[dict[str, Any]]:
        """The chunk as history rows (``x``/``grad`` flat lists), for small callers and tests."""
        xs = self.x.tolist() if self.x is not None else None
        gs = self.grad.tolist() if self.grad is not None else None
        out = []
        for i, step in enumerate(self.steps):
            row: dict[str, Any] = {"step": step, "f": self.f[i], "grad_norm": self.grad_norm[i], "lr": self.lr[i]}
            if xs is not None:
                row["x"] = xs[i]
            if gs is not None:
                row["grad"] = gs[i]
            out.append(row)
        return out


class StopReason(StrEnum):
    """Why a run ended. ``INTERRUPTED`` means the caller asked the run to hand back (it is
    resumed later from the checkpoint it wrote); every other reason ends the job."""

    STEPS = "steps"
    GRAD_NORM = "grad_norm"
    TIME_LIMIT = "time_limit"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Result:
    """The end of a run, and why it ended."""

    x: Any
    f: float
    grad_norm: float
    steps: int
    stop_reason: StopReason
    graph: list[str]
    device: str
    seconds: float
    grad: Any = None
    distance_to_minimum: float | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "x": self.x, "f": self.f, "grad_norm": self.grad_norm, "steps": self.steps,
            "stop_reason": self.stop_reason, "graph": self.graph, "device": self.device,
            "seconds": self.seconds,
        }
        if self.grad is not None:
            out["grad"] = self.grad
        if self.distance_to_minimum is not None:
            out["distance_to_minimum"] = self.distance_to_minimum
        return out
