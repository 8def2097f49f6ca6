"""Turn a checked ``Expression`` into a plain Python callable of one tensor.

Each tree node becomes a small closure that calls one torch function; the result is as fast as
hand-written torch code up to a few function calls per node, and autograd sees ordinary ops.
"""
from __future__ import annotations

import ast
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F

from service.expr.parse import Expression

Objective = Callable[[torch.Tensor], torch.Tensor]
_Node = Callable[[torch.Tensor], Any]


def _tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def call(x: Any, dim: Any = None, *, like: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        if type(x) is not torch.Tensor:
            x = _tensor(x, like)
        return fn(x) if dim is None else fn(x, dim=int(dim), keepdim=keepdim)
    return call


def _norm(x: Any, p: Any = 2, *, like: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    return torch.linalg.vector_norm(_tensor(x, like), ord=p, dim=dim, keepdim=keepdim)


def _min(x: Any, y: Any = None, *, like: torch.Tensor) -> torch.Tensor:
    if y is None:
        return torch.min(_tensor(x, like))
    return torch.minimum(_tensor(x, like), _tensor(y, like))


def _max(x: Any, y: Any = None, *, like: torch.Tensor) -> torch.Tensor:
    if y is None:
        return torch.max(_tensor(x, like))
    return torch.maximum(_tensor(x, like), _tensor(y, like))


def _logsumexp(x: Any, dim: Any = None, *, like: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    x = _tensor(x, like)
    if dim is None:
        return torch.logsumexp(x.reshape(-1), 0)
    return torch.logsumexp(x, int(dim), keepdim=keepdim)


def _clamp(x: Any, lo: Any = None, hi: Any = None, *, like: torch.Tensor, min: Any = None, max: Any = None) -> torch.Tensor:
    return torch.clamp(_tensor(x, like), min=lo if min is None else min, max=hi if max is None else max)


def _elementwise(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def call(*args: Any, like: torch.Tensor) -> torch.Tensor:
        return fn(*(_tensor(a, like) for a in args))
    return call


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def call(a: Any, *, like: torch.Tensor) -> torch.Tensor:
        return fn(a if type(a) is torch.Tensor else _tensor(a, like))
    return call


def _where(cond: Any, a: Any, b: Any, *, like: torch.Tensor) -> torch.Tensor:
    return torch.where(_tensor(cond, like), _tensor(a, like), _tensor(b, like))


def _cumsum(x: Any, dim: Any, *, like: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(_tensor(x, like), int(dim))


_UNARY_TORCH = {
    name: getattr(torch, name)
    for name in (
        "abs sqrt exp exp2 log log1p log2 log10 expm1 sin cos tan asin acos atan sinh cosh tanh "
        "sigmoid relu square sign erf neg reciprocal rsqrt"
    ).split()
}
_UNARY_TORCH["softplus"] = F.softplus

_CALLS: dict[str, Callable[..., torch.Tensor]] = {
    **{name: _unary(fn) for name, fn in _UNARY_TORCH.items()},
    "sum": _reduce(torch.sum), "prod": _reduce(torch.prod), "mean": _reduce(torch.mean),
    "logsumexp": _logsumexp, "norm": _norm, "min": _min, "max": _max,
    "minimum": _elementwise(torch.minimum), "maximum": _elementwise(torch.maximum),
    "clamp": _clamp, "pow": _elementwise(torch.pow), "atan2": _elementwise(torch.atan2),
    "dot": _elementwise(torch.dot), "matmul": _elementwise(torch.matmul),
    "outer": _elementwise(torch.outer), "where": _where, "cumsum": _cumsum,
}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.MatMult: operator.matmul,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


def compile_expression(expr: Expression) -> Objective:
    """Return ``f(x)`` for the checked expression; ``f`` builds an ordinary autograd graph."""
    node = _compile(expr.tree)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return _tensor(node(x), x)

    return objective


def _compile(node: ast.expr) -> _Node:
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda x: value
    if isinstance(node, ast.Name):
        return lambda x: x
    if isinstance(node, ast.BinOp):
        op = _BINOPS[type(node.op)]
        left, right = _compile(node.left), _compile(node.right)
        if isinstance(node.op, ast.MatMult):
            return lambda x: op(_tensor(left(x), x), _tensor(right(x), x))
        return lambda x: op(left(x), right(x))
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda x: -operand(x)
        return operand
    if isinstance(node, ast.Compare):
        cmp = _COMPARE[type(node.ops[0])]
        left, right = _compile(node.left), _compile(node.comparators[0])
        return lambda x: cmp(_tensor(left(x), x), right(x))
    if isinstance(node, ast.Subscript):
        value = _compile(node.value)
        index = _index(node.slice)
        return lambda x: _tensor(value(x), x)[index]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        fn = _CALLS[node.func.id]
        args = [_compile(a) for a in node.args]
        kwargs = {
            kw.arg: (_compile(kw.value) if not isinstance(kw.value, ast.Constant) else _const(kw.value.value))
            for kw in node.keywords
        }
        if len(args) == 1 and not kwargs:
            only = args[0]
            return lambda x: fn(only(x), like=x)
        return lambda x: fn(*(a(x) for a in args), like=x, **{k: v(x) for k, v in kwargs.items()})
    raise TypeError(f"unchecked node {type(node).__name__}")  # parse() never lets one through


def _const(value: Any) -> _Node:
    return lambda x: value


def _index(node: ast.expr) -> Any:
    if isinstance(node, ast.Tuple):
        return tuple(_index(e) for e in node.elts)
    if isinstance(node, ast.Slice):
        bound = [b.value if isinstance(b, ast.Constant) else None for b in (node.lower, node.upper, node.step)]
        return slice(*bound)
    assert isinstance(node, ast.Constant)
    return node.value


def check_on_shape(expr: Expression, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> None:
    """Trace the objective on a meta tensor of ``shape`` (no memory, no maths): it must run
    and give one real number. Raises ExpressionError otherwise."""
    from service.expr.parse import ExpressionError

    x = torch.empty(shape, dtype=dtype, device="meta", requires_grad=True)
    try:
        out = compile_expression(expr)(x)
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExpressionError(
            f"the objective cannot be evaluated on {expr.variable} of shape {list(shape)}: {first}"
        ) from None
    if out.dtype == torch.bool or out.is_complex():
        raise ExpressionError("the objective must give a real number, not a comparison")
    if out.numel() != 1:
        raise ExpressionError(
            f"the objective gives a tensor of shape {list(out.shape)}, not a single number; "
            f"wrap it in sum(...) or mean(...)"
        )
    if not out.requires_grad:
        raise ExpressionError(f"the objective does not depend differentiably on '{expr.variable}'")


def warm_up() -> None:
    """Load torch's meta kernels now (about a second, once per process) rather than in the
    first request that traces an objective."""
    from service.expr.parse import parse

    check_on_shape(parse("sum(log(abs(x) + 1) ** 2)"), (2, 2))
