"""The lesson's pictures as PNG bytes: the contour of f with the path on it, and f per step.

Drawn with matplotlib's Agg renderer on ``Figure`` objects made here, never pyplot: pyplot keeps
global state (the current figure, a GUI backend) that request threads would share. Every input
is plain numpy, already bounded by the caller; non-finite values are masked, never drawn.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SIZE_INCHES = (6.4, 4.8)
DPI = 100  # 640 x 480 pixels
LEVELS = 20


def contour_levels(f: np.ndarray, levels: int = LEVELS) -> np.ndarray | None:
    """Contour levels for ``f``: log-spaced above the minimum when f spans decades (f >= 0 with
    a maximum over 100 times its minimum) or most of the grid lies near the bottom (a valley),
    else evenly spaced; None when f has no two different finite values."""
    finite = f[np.isfinite(f)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    span = high - low
    if not span > 0 or not np.isfinite(span):
        return None
    if (low >= 0 and high >= 100 * low) or float(np.median(finite)) - low < 0.1 * span:
        return low + np.geomspace(span * 1e-4, span, levels)
    return np.linspace(low, high, levels)


def contour_png(xs: np.ndarray, ys: np.ndarray, f: np.ndarray, path: np.ndarray,
                minima: Sequence[tuple[float, float]], labels: tuple[str, str], title: str) -> bytes:
    """The contour of ``f`` (rows follow ``ys``) with ``path`` ((points, 2): start first, end
    last) drawn over it, and the known ``minima`` marked."""
    fig, ax = _figure()
    masked = np.ma.masked_invalid(f)
    levels = contour_levels(f)
    if levels is not None:
        filled = ax.contourf(xs, ys, masked, levels=levels, cmap="viridis", extend="both")
        ax.contour(xs, ys, masked, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
        fig.colorbar(filled, ax=ax, label="f", format="%.3g")
    ax.set_xlim(float(xs[0]), float(xs[-1]))
    ax.set_ylim(float(ys[0]), float(ys[-1]))
    shown = path[np.isfinite(path).all(axis=1)] if len(path) else path
    if len(shown):
        ax.plot(shown[:, 0], shown[:, 1], "-", color="tab:red", linewidth=1.5, label="path")
        ax.plot(shown[0, 0], shown[0, 1], "o", color="white", markeredgecolor="k", markersize=7, label="start")
        ax.plot(shown[-1, 0], shown[-1, 1], "X", color="tab:red", markeredgecolor="k", markersize=9, label="end")
    if minima:
        mx, my = zip(*minima)
        ax.plot(mx, my, "*", color="gold", markeredgecolor="k", markersize=13, linestyle="none", label="minimum")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=10)
    if len(shown) or minima:
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    return _png(fig)


def loss_png(steps: np.ndarray, f: np.ndarray, title: str) -> bytes:
    """f per step; a log scale when every finite f is positive and they span over a decade."""
    fig, ax = _figure()
    keep = np.isfinite(f)
    steps, f = steps[keep], f[keep]
    if len(f):
        ax.plot(steps, f, "-", color="tab:blue", linewidth=1.5, marker="." if len(f) < 50 else None)
        if f.min() > 0 and f.max() > 10 * f.min():
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no recorded steps yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("f")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def _figure():  # type: ignore[no-untyped-def]
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
