"""Turn a checked ``Expression`` into a plain Python callable of one tensor.

Each tree node becomes a small closure that calls one torch function; the result is as fast as
hand-written torch code up to a few function calls per node, and autograd sees ordinary ops.
Calls run the implementations in ``service.expr.functions``, the table ``parse`` checked them
against.
"""
from __future__ import annotations

import ast
import operator
from typing import Any, Callable, Mapping

import torch

from service.expr.functions import FUNCTIONS, to_tensor
from service.expr.parse import Expression

Objective = Callable[[torch.Tensor], torch.Tensor]
_Node = Callable[[torch.Tensor], Any]


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.MatMult: operator.matmul,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


def compile_expression(expr: Expression, data: Mapping[str, torch.Tensor] | None = None) -> Objective:
    """Return ``f(x)`` for the checked expression; ``f`` builds an ordinary autograd graph.
    ``data`` holds the tensors the expression reads by name besides its variable (``expr.data``)."""
    data = dict(data or {})
    missing = [name for name in expr.data if name not in data]
    if missing:
        raise ValueError(f"the objective reads data tensor '{missing[0]}', which was not given")
    node = _compile(expr.tree, expr.variable, data)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return to_tensor(node(x), x)

    return objective


def _compile(node: ast.expr, variable: str, data: Mapping[str, torch.Tensor]) -> _Node:
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda x: value
    if isinstance(node, ast.Name):
        if node.id == variable:
            return lambda x: x
        tensor = data[node.id]
        return lambda x: tensor
    if isinstance(node, ast.BinOp):
        op = _BINOPS[type(node.op)]
        left, right = _compile(node.left, variable, data), _compile(node.right, variable, data)
        if isinstance(node.op, ast.MatMult):
            return lambda x: op(to_tensor(left(x), x), to_tensor(right(x), x))
        return lambda x: op(left(x), right(x))
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, variable, data)
        if isinstance(node.op, ast.USub):
            return lambda x: -operand(x)
        return operand
    if isinstance(node, ast.Compare):
        cmp = _COMPARE[type(node.ops[0])]
        left, right = _compile(node.left, variable, data), _compile(node.comparators[0], variable, data)
        return lambda x: cmp(to_tensor(left(x), x), right(x))
    if isinstance(node, ast.Subscript):
        value = _compile(node.value, variable, data)
        index = _index(node.slice)
        return lambda x: to_tensor(value(x), x)[index]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        fn = FUNCTIONS[node.func.id].impl
        args = [_compile(a, variable, data) for a in node.args]
        kwargs = {
            kw.arg: (_compile(kw.value, variable, data) if not isinstance(kw.value, ast.Constant) else _const(kw.value.value))
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
