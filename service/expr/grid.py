"""The objective on a grid over two of x's elements: the data of the lesson's contour picture.

Every grid point is a copy of a base point (the job's final x, or x0) with two flat elements,
``coords``, set to the grid's values. The points are evaluated in chunks as one stack, the
compiled objective mapped over it with ``torch.func.vmap`` (as the batched engine maps it over
lanes); the first chunk is checked against plain calls, and where vmap cannot run the objective
or disagrees beyond rounding, every point is evaluated alone. A chunk holds about
``chunk_bytes`` of the objective's intermediates, and the evaluation stops with ``GridTooSlow``
once ``max_seconds`` have passed, so neither memory nor time depends on what the caller asks.
Pure torch: no I/O.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from service.expr.compile import Objective

# How far the mapped objective may stray from plain calls (relative, per dtype) before the plain
# calls are used instead: rounding in a reduction, nothing more.
AGREEMENT = {torch.float32: 1e-5, torch.float64: 1e-12}
CHUNK_BYTES = 64 * 2**20
MAX_CHUNK_POINTS = 4096
# A box with no width (a path that never moved along a coordinate) gets at least this much.
MIN_WIDTH = 1.0
# Path values are clipped to this for the box (a diverged path can reach 1e38 or more).
MAX_COORDINATE = 1e100


class GridTooSlow(Exception):
    """The grid was not done within its time budget."""


@dataclass(frozen=True)
class Surface:
    """f on the grid: ``f[r, c]`` is f where x[coords[0]] = xs[c] and x[coords[1]] = ys[r]."""

    coords: tuple[int, int]
    xs: np.ndarray
    ys: np.ndarray
    f: np.ndarray


def padded_range(values: Iterable[float], margin: float = 0.15) -> tuple[float, float]:
    """A range holding every finite value (clipped to ±``MAX_COORDINATE``), widened by
    ``margin`` of its width on each side; a range of no width (one value, or none finite) is
    centred on the value, half its size wide and at least ``MIN_WIDTH``."""
    finite = [min(MAX_COORDINATE, max(-MAX_COORDINATE, float(v))) for v in values if math.isfinite(float(v))]
    if not finite:
        return -MIN_WIDTH / 2, MIN_WIDTH / 2
    lo, hi = min(finite), max(finite)
    if hi - lo > 0:
        return lo - margin * (hi - lo), hi + margin * (hi - lo)
    half = max(MIN_WIDTH, abs(lo) * 0.5) / 2
    return lo - half, lo + half


def evaluate_grid(objective: Objective, base: torch.Tensor, coords: tuple[int, int], xs: Sequence[float],
                  ys: Sequence[float], *, peak_bytes: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                  max_seconds: float | None = None) -> Surface:
    """f at every (xs[c], ys[r]) over ``coords`` of ``base``, rows following ys, evaluated in
    base's dtype and on its device (the grid's values rounded to that dtype). ``peak_bytes`` is one evaluation's estimated peak (``expr.check_on_shape``),
    which sizes the chunks. Raises GridTooSlow past ``max_seconds``, ValueError on bad coords."""
    numel = base.numel()
    i, j = coords
    if i == j or not (0 <= i < numel and 0 <= j < numel):
        raise ValueError(f"coords must be two different flat indices below {numel}, got {list(coords)}")
    started = time.perf_counter()
    dtype, device = base.dtype, base.device
    gx = torch.as_tensor(np.asarray(xs, dtype=np.float64)).to(device=device, dtype=dtype)
    gy = torch.as_tensor(np.asarray(ys, dtype=np.float64)).to(device=device, dtype=dtype)
    rows, cols = len(gy), len(gx)
    total = rows * cols
    flat = base.detach().reshape(-1)
    per_point = max(peak_bytes or 0, numel * base.element_size(), 1)
    chunk = max(1, min(MAX_CHUNK_POINTS, chunk_bytes // per_point, total))

    def points(start: int, stop: int) -> torch.Tensor:
        k = torch.arange(start, stop, device=device)
        stack = flat.expand(stop - start, numel).clone()
        stack[:, i] = gx[k % cols]
        stack[:, j] = gy[k // cols]
        return stack.reshape(stop - start, *base.shape)

    def overdue() -> None:
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            raise GridTooSlow(f"the grid took over {max_seconds:g} seconds")

    out = torch.empty(total, dtype=torch.float64)
    with torch.no_grad():
        mapped = _mapped(objective, points(0, chunk), dtype)
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            stack = points(start, stop)
            if mapped is not None:
                out[start:stop] = mapped(stack).reshape(-1).to("cpu", torch.float64)
            else:
                for k in range(stop - start):
                    out[start + k] = _plain(objective, stack[k])
                    if k % 256 == 255:
                        overdue()
            overdue()
    return Surface((i, j), np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64),
                   out.reshape(rows, cols).numpy())


def _plain(objective: Objective, point: torch.Tensor) -> float:
    return float(objective(point).reshape(-1)[0])


def _mapped(objective: Objective, first: torch.Tensor, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """``vmap(objective)`` if it runs on the first chunk and agrees there with plain calls (the
    first, middle and last point), else None."""
    mapped = torch.func.vmap(objective)
    try:
        values = mapped(first).reshape(-1)
    except Exception:  # vmap has no rule for some op, or the objective reads a value (any error)
        return None
    if values.numel() != len(first) or values.is_complex() or values.dtype == torch.bool:
        return None
    tolerance = AGREEMENT.get(dtype, 1e-5)
    for k in sorted({0, len(first) // 2, len(first) - 1}):
        try:
            want = _plain(objective, first[k])
        except Exception:
            return None
        got = float(values[k])
        if math.isnan(want) and math.isnan(got):
            continue
        if want != got and not abs(got - want) <= tolerance * max(1.0, abs(want)):
            return None
    return mapped
