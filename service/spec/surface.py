"""A job's own objective on a grid (``/v1/jobs/<id>/surface``, ``plot.png``): its compiled
expression in its dtype, on the CPU, the elements of x other than the grid's two held fixed.
Pure evaluation of the spec (``service.expr.grid``): no engine, no I/O."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from service.expr import ExpressionError, check_on_shape, compile_expression
from service.expr.grid import CHUNK_BYTES, MAX_CHUNK_POINTS, Surface, evaluate_grid
from service.spec.start import data_tensors, start_tensor
from service.spec.validate import CheckedSpec


def start_point(checked: CheckedSpec) -> np.ndarray:
    """The job's x0, flat, as float64."""
    return start_tensor(checked).reshape(-1).to(torch.float64).numpy()


def _dtype(checked: CheckedSpec) -> torch.dtype:
    return torch.float64 if checked.spec.dtype == "float64" else torch.float32


def evaluation_peak(checked: CheckedSpec) -> int | None:
    """One evaluation's estimated peak bytes (traced on shapes alone); None if it cannot be traced."""
    try:
        return check_on_shape(checked.expression, checked.shape, _dtype(checked), checked.data_shapes)
    except ExpressionError:
        return None


def grid_bytes(checked: CheckedSpec, peak: int | None) -> int:
    """What evaluating the job's grid holds at once, estimated before any evaluation: a chunk of
    points, each with its evaluation's peak (``evaluate_grid`` sizes its chunks the same way)."""
    numel = max(1, int(np.prod(checked.shape)))
    itemsize = torch.empty(0, dtype=_dtype(checked)).element_size()
    per_point = max(peak or 0, numel * itemsize, 1)
    chunk = max(1, min(MAX_CHUNK_POINTS, CHUNK_BYTES // per_point))
    return chunk * (per_point + numel * itemsize)


def job_surface(checked: CheckedSpec, at: np.ndarray | None, coords: tuple[int, int], xs: Sequence[float],
                ys: Sequence[float], max_seconds: float | None = None, peak: int | None = None) -> Surface:
    """The job's own objective on the grid, in its dtype on the CPU, the elements other than
    ``coords`` held at ``at`` (flat; x0 when None). ``peak``: ``evaluation_peak``'s answer."""
    dtype = _dtype(checked)
    flat = torch.as_tensor(at if at is not None else start_point(checked), dtype=torch.float64)
    data = {name: t.to(dtype) for name, t in data_tensors(checked).items()}
    return evaluate_grid(compile_expression(checked.expression, data), flat.to(dtype).reshape(checked.shape), coords,
                         xs, ys, peak_bytes=peak, max_seconds=max_seconds)
