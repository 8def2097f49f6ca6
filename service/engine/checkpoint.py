"""A resumable point of a run: after ``step`` steps, the point x and the optimiser's state.

Serialised with ``torch.save`` and read back with ``weights_only=True`` (plain tensors and
containers only, never arbitrary pickles).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Checkpoint:
    step: int
    x: torch.Tensor
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    seconds: float
    graph: list[str]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {"step": self.step, "x": self.x.detach().cpu(), "optimizer": self.optimizer,
             "scheduler": self.scheduler, "seconds": self.seconds, "graph": self.graph},
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Checkpoint":
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(raw["step"], raw["x"], raw["optimizer"], raw["scheduler"], raw["seconds"], raw["graph"])
