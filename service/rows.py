"""The one shape of recorded history: ``HistoryRows``, consecutive rows as columns.

The engine makes each block once, as numpy columns, and the store writes those columns as they
are (binary COPY on PostgreSQL, a bulk insert elsewhere); the store's reads hand blocks back
too. Numpy only, so both the engine (torch) and the store (SQL) can use it without importing
each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Progress:
    """Where a run stands at a chunk's end: the last step evaluated, the steps it may take in all,
    and f and the gradient norm at that step (whether or not the step is recorded)."""

    step: int
    steps: int
    f: float
    grad_norm: float


@dataclass(frozen=True)
class HistoryRows:
    """Row ``i`` is step ``steps[i]``: f, gradient norm and learning rate there, and, when
    recorded, x and grad flattened (``x``/``grad`` are (rows, numel) float64, or None).
    Lists are accepted and turned into arrays once; arrays of the right dtype are kept as is."""

    steps: np.ndarray
    f: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    x: np.ndarray | None = None
    grad: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows = len(self.steps)
        set_ = object.__setattr__
        set_(self, "steps", np.asarray(self.steps, dtype=np.int64).reshape(rows))
        for name in ("f", "grad_norm", "lr"):
            set_(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(rows))
        for name in ("x", "grad"):
            value = getattr(self, name)
            if value is not None:
                array = np.asarray(value, dtype=np.float64)
                set_(self, name, array if array.ndim == 2 else array.reshape(rows, -1 if rows else 0))

    def __len__(self) -> int:
        return len(self.steps)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The rows as one dict each (``x``/``grad`` flat lists where recorded)."""
        columns: dict[str, list[Any]] = {"step": self.steps.tolist(), "f": self.f.tolist(),
                                         "grad_norm": self.grad_norm.tolist(), "lr": self.lr.tolist()}
        for name in ("x", "grad"):
            value = getattr(self, name)
            if value is not None:
                columns[name] = value.tolist()
        return [dict(zip(columns, values)) for values in zip(*columns.values())]
