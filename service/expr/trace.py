"""Try an objective before any job runs it: trace it on a meta tensor and estimate its memory.

A meta tensor has a shape and a dtype but no storage, so tracing costs no memory and no maths,
whatever the shape. The trace runs the objective *and its backward pass* under a dispatch mode
that sees every aten op (the ones inside ``norm`` or ``logsumexp`` too) and adds up the bytes of
each new tensor it makes. Views (``expand``, indexing) and in-place ops make none and are not
counted. Autograd keeps the forward intermediates alive for backward, and backward makes
gradients of each, so the sum over both passes, plus x itself, is a fair upper estimate of one
evaluation's peak: ``sum(outer(x, x))`` at 15,000 float32 elements counts 2.7 GB, and the real
evaluation peaks at about 2.5 GB.

Every failure of the trace becomes an ``ExpressionError`` (a 400 at admission), whatever Python
exception torch raised, except ``MemoryError``, which is never turned into a verdict on the text.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from service.errors import first_line
from service.expr.compile import compile_expression
from service.expr.parse import Expression, ExpressionError, parse

T = TypeVar("T")


class _Allocations(TorchDispatchMode):
    """Adds up the bytes of every tensor an op returns that is not a view of its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else (out,)
        for declared, result in zip(func._schema.returns, results):
            if isinstance(result, torch.Tensor) and declared.alias_info is None:
                self.bytes += result.numel() * result.element_size()
        return out


def check_on_shape(expr: Expression, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                   data: Mapping[str, tuple[int, ...]] | None = None) -> int:
    """Trace the objective and its gradient on a meta tensor of ``shape`` and ``dtype`` (and
    its data tensors on meta tensors of the ``data`` shapes): it must run, give one real number
    and have a gradient. Returns the estimated peak bytes of one evaluation with its gradient
    (intermediates of both passes, plus x and the data); raises ExpressionError otherwise."""
    x = torch.empty(shape, dtype=dtype, device="meta", requires_grad=True)
    tensors = {name: torch.empty(s, dtype=dtype, device="meta") for name, s in (data or {}).items()}
    objective = compile_expression(expr, tensors)
    with _Allocations() as allocations:
        out = _attempt(lambda: objective(x), expr, shape)
        _check_result(out, expr.variable)
        _attempt(out.backward, expr, shape)
    if x.grad is None:
        raise ExpressionError(
            f"the objective has no gradient with respect to '{expr.variable}' (it only counts or compares)"
        )
    held = sum(t.numel() * t.element_size() for t in (x, *tensors.values()))
    return allocations.bytes + held


def _attempt(step: Callable[[], T], expr: Expression, shape: tuple[int, ...]) -> T:
    """Run one pass of the trace; any exception but MemoryError becomes a refusal that says why."""
    try:
        return step()
    except MemoryError:
        raise
    except Exception as exc:  # torch raises many kinds (OverflowError, NotImplementedError, ...)
        raise ExpressionError(
            f"the objective cannot be evaluated on {expr.variable} of shape {list(shape)}: {first_line(exc, 300)}"
        ) from None


def _check_result(out: torch.Tensor, variable: str) -> None:
    """The traced result must be one differentiable real number."""
    if out.dtype == torch.bool or out.is_complex():
        raise ExpressionError("the objective must give a real number, not a comparison")
    if out.numel() != 1:
        raise ExpressionError(
            f"the objective gives a tensor of shape {list(out.shape)}, not a single number; "
            f"wrap it in sum(...) or mean(...)"
        )
    if not out.requires_grad:
        raise ExpressionError(f"the objective does not depend differentiably on '{variable}'")


def warm_up() -> None:
    """Load torch's meta kernels now (about a second, once per process) rather than in the
    first request that traces an objective."""
    check_on_shape(parse("sum(log(abs(x) + 1) ** 2)"), (2, 2))
