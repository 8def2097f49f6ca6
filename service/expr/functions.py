"""The functions an objective may call: one table that both checks and runs them.

``FUNCTIONS`` is the language's allow-list of calls, and so part of its security boundary.
Each entry holds everything about one function: how many positional arguments it takes, which
keywords it accepts, and the torch code that computes it. ``service.expr.parse`` checks calls
against the arity and keywords; ``service.expr.compile`` runs the implementation. Because both
read this one table, a function is either fully allowed or not allowed at all; it cannot pass
the checker yet have no implementation, or vice versa.

The implementations are torch callables, so importing this module imports torch. Parsing pays
nothing extra for that: importing ``service.expr`` already imports torch through ``compile``.

Every implementation is called as ``impl(*args, like=x, **keywords)``. Arguments may be plain
numbers left by constant folding; ``like`` is the objective's input tensor, whose dtype and
device such numbers take on.

Some arguments must be constants of a kind (``Function.constant_args``), checked by ``parse``:

- ``DIM``: a dimension (``sum(x, 0)``, ``cumsum(x, -1)``, ``norm(x, dim=1)``) is an integer
  constant; ``1.5``, ``inf`` or a tensor is refused rather than truncated or overflowed.
- ``ORDER``: a norm's order ``p`` is a constant >= 1 (up to ``max_exponent``) or ``inf``.
  ``p = 0`` counts non-zeros and has no gradient (backward leaves ``x.grad`` empty and the job
  could not run); ``0 < p < 1``, negative ``p`` and ``-inf`` are not norms and have infinite or
  undefined derivatives at zero; huge ``p`` only overflows.
- ``EXPONENT``: ``pow``'s exponent, when it is a constant, obeys ``max_exponent`` as ``**`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

Implementation = Callable[..., torch.Tensor]

DIM = "dim"  # an integer constant naming a dimension
ORDER = "order"  # a norm's order: a constant >= 1, or inf
EXPONENT = "exponent"  # a tensor, or a constant within max_exponent


@dataclass(frozen=True)
class Function:
    """One allowed function: positional argument count, allowed keywords, torch code, and which
    arguments (by position, counting a method's receiver as 0, or by keyword) must be constants
    of a kind (``DIM``, ``ORDER``, ``EXPONENT``)."""

    min_args: int
    max_args: int
    impl: Implementation
    keywords: frozenset[str] = frozenset()
    constant_args: dict[int | str, str] = field(default_factory=dict)


def to_tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor with ``like``'s dtype and device; tensors pass through unchanged."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Implementation:
    def call(a: Any, *, like: torch.Tensor) -> torch.Tensor:
        return fn(a if type(a) is torch.Tensor else to_tensor(a, like))
    return call


def _elementwise(fn: Implementation) -> Implementation:
    def call(*args: Any, like: torch.Tensor) -> torch.Tensor:
        return fn(*(to_tensor(a, like) for a in args))
    return call


def _reduce(fn: Implementation) -> Implementation:
    def call(x: Any, dim: Any = None, *, like: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        if type(x) is not torch.Tensor:
            x = to_tensor(x, like)
        return fn(x) if dim is None else fn(x, dim=int(dim), keepdim=keepdim)
    return call


def _logsumexp(x: Any, dim: Any = None, *, like: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    x = to_tensor(x, like)
    if dim is None:
        return torch.logsumexp(x.reshape(-1), 0)
    return torch.logsumexp(x, int(dim), keepdim=keepdim)


def _norm(x: Any, p: Any = 2, *, like: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return torch.linalg.vector_norm(to_tensor(x, like), ord=p, dim=dim, keepdim=keepdim)


def _min(x: Any, y: Any = None, *, like: torch.Tensor) -> torch.Tensor:
    if y is None:
        return torch.min(to_tensor(x, like))
    return torch.minimum(to_tensor(x, like), to_tensor(y, like))


def _max(x: Any, y: Any = None, *, like: torch.Tensor) -> torch.Tensor:
    if y is None:
        return torch.max(to_tensor(x, like))
    return torch.maximum(to_tensor(x, like), to_tensor(y, like))


def _clamp(x: Any, lo: Any = None, hi: Any = None, *, like: torch.Tensor, min: Any = None, max: Any = None) -> torch.Tensor:
    return torch.clamp(to_tensor(x, like), min=lo if min is None else min, max=hi if max is None else max)


def _where(cond: Any, a: Any, b: Any, *, like: torch.Tensor) -> torch.Tensor:
    return torch.where(to_tensor(cond, like), to_tensor(a, like), to_tensor(b, like))


def _cumsum(x: Any, dim: Any, *, like: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(to_tensor(x, like), int(dim))


_REDUCE = frozenset({"dim", "keepdim"})
_REDUCE_DIMS: dict[int | str, str] = {1: DIM, "dim": DIM}

FUNCTIONS: dict[str, Function] = {
    **{
        name: Function(1, 1, _unary(getattr(torch, name)))
        for name in (
            "abs sqrt exp exp2 log log1p log2 log10 expm1 sin cos tan asin acos atan sinh cosh tanh "
            "sigmoid relu square sign erf neg reciprocal rsqrt"
        ).split()
    },
    "softplus": Function(1, 1, _unary(F.softplus)),
    "sum": Function(1, 2, _reduce(torch.sum), _REDUCE, _REDUCE_DIMS),
    "prod": Function(1, 2, _reduce(torch.prod), _REDUCE, _REDUCE_DIMS),
    "mean": Function(1, 2, _reduce(torch.mean), _REDUCE, _REDUCE_DIMS),
    "logsumexp": Function(1, 2, _logsumexp, _REDUCE, _REDUCE_DIMS),
    "norm": Function(1, 2, _norm, frozenset({"p", "dim", "keepdim"}), {1: ORDER, "p": ORDER, "dim": DIM}),
    "min": Function(1, 2, _min),
    "max": Function(1, 2, _max),
    "minimum": Function(2, 2, _elementwise(torch.minimum)),
    "maximum": Function(2, 2, _elementwise(torch.maximum)),
    "clamp": Function(1, 3, _clamp, frozenset({"min", "max"})),
    "pow": Function(2, 2, _elementwise(torch.pow), constant_args={1: EXPONENT}),
    "atan2": Function(2, 2, _elementwise(torch.atan2)),
    "dot": Function(2, 2, _elementwise(torch.dot)),
    "matmul": Function(2, 2, _elementwise(torch.matmul)),
    "outer": Function(2, 2, _elementwise(torch.outer)),
    "where": Function(3, 3, _where),
    "cumsum": Function(2, 2, _cumsum, constant_args={1: DIM}),
}
