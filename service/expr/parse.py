"""The objective language: a small, safe subset of Python/torch expressions.

User text is parsed with ``ast`` and every node is checked against an allow-list; nothing is
ever handed to ``eval``/``exec``/``compile``. The functions that may be called, with their
argument counts and keywords, come from ``service.expr.functions``, the same table that
``service.expr.compile`` takes their torch code from. The checked tree is turned into torch
calls by ``service.expr.compile``. Constant sub-expressions are folded here, in bounded float maths, so
``10**10**10`` is refused instead of computed.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Collection

from service.config import Limits
from service.expr.functions import DIM, EXPONENT, FUNCTIONS, ORDER, Function

CONSTANTS = {"pi": math.pi, "e": math.e, "inf": math.inf}
NAMESPACES = ("torch", "math")

_BINOPS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@",
    ast.Mod: "%",
}
_UNARY = {ast.USub: "-", ast.UAdd: "+"}
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


class ExpressionError(ValueError):
    """A refused expression; ``column`` is 1-based, or None when the whole text is at fault."""

    def __init__(self, message: str, text: str = "", column: int | None = None) -> None:
        self.reason = message
        self.column = column
        if column is not None and text:
            start = max(0, column - 30)
            snippet = text[start:column + 30]
            pointer = " " * (column - 1 - start) + "^"
            message = f"{message} at column {column}:\n  {snippet}\n  {pointer}"
        super().__init__(message)


@dataclass(frozen=True)
class Expression:
    """A checked, constant-folded objective, ready to compile."""

    text: str
    variable: str
    tree: ast.expr
    data: tuple[str, ...] = ()  # the data tensors it reads, by name, in the order they first appear


def taken_name(name: str) -> str | None:
    """What a name already means in the language (a function, a constant, a namespace), or None
    if a data tensor may take it."""
    if name in FUNCTIONS:
        return "a function"
    if name in CONSTANTS:
        return "a constant"
    if name in NAMESPACES:
        return "a namespace"
    return None


def _col(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0) + 1


def parse(text: str, variable: str = "x", limits: Limits | None = None, data: Collection[str] = ()) -> Expression:
    """Check ``text`` against the allow-list and the limits; raise ExpressionError if refused.
    ``data`` names the data tensors it may read besides the variable."""
    limits = limits or Limits()
    if not isinstance(text, str):
        raise ExpressionError("the objective must be a string")
    if len(text) > limits.max_expression_chars:
        raise ExpressionError(
            f"expression is {len(text)} characters, over the limit of "
            f"{limits.max_expression_chars} (max_expression_chars)"
        )
    if not text.strip():
        raise ExpressionError("the objective is empty")
    for i, ch in enumerate(text):
        if not (ch.isascii() and (ch.isprintable() or ch in " \t\n")):
            raise ExpressionError(f"character {ch!r} is not allowed (ASCII only)", text, i + 1)
    if text.count("(") > limits.max_expression_depth * 4 or text.count("[") > limits.max_expression_depth * 4:
        raise ExpressionError(
            f"too deeply nested (limit {limits.max_expression_depth} levels, max_expression_depth)"
        )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}", text.strip(), exc.offset) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("the expression could not be parsed (too complex)") from None
    _check_size(tree, text, limits)
    checker = _Checker(text.strip(), variable, limits, frozenset(data))
    body = checker.visit(tree.body)
    if variable not in checker.seen_names:
        raise ExpressionError(f"the objective does not use the variable '{variable}'")
    return Expression(text=text, variable=variable, tree=body,
                      data=tuple(name for name in checker.seen_order if name != variable))


def _check_size(tree: ast.AST, text: str, limits: Limits) -> None:
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > limits.max_expression_nodes:
            raise ExpressionError(
                f"expression has over {limits.max_expression_nodes} nodes (max_expression_nodes)"
            )
        if depth > limits.max_expression_depth:
            raise ExpressionError(
                f"expression nests over {limits.max_expression_depth} levels (max_expression_depth)",
                text, _col(node),
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class _Checker:
    """Walks the tree, refusing anything outside the language and folding constants."""

    def __init__(self, text: str, variable: str, limits: Limits, data: frozenset[str] = frozenset()) -> None:
        self.text = text
        self.variable = variable
        self.limits = limits
        self.data = data
        self.seen_names: set[str] = set()
        self.seen_order: list[str] = []

    def fail(self, message: str, node: ast.AST) -> ExpressionError:
        return ExpressionError(message, self.text, _col(node))

    def visit(self, node: ast.AST) -> ast.expr:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise self.fail(f"{_describe(node)} is not allowed in an objective", node)
        return method(node)

    # -- leaves -------------------------------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> ast.expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"constant {value!r:.40} is not allowed (numbers only)", node)
        if isinstance(value, int) and abs(value) > self.limits.max_constant:
            raise self.fail(f"constant is larger than {self.limits.max_constant:g} (max_constant)", node)
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= self.limits.max_constant):
            raise self.fail(f"constant is larger than {self.limits.max_constant:g} (max_constant)", node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if node.id == self.variable or node.id in self.data:
            if node.id not in self.seen_names:
                self.seen_names.add(node.id)
                self.seen_order.append(node.id)
            return node
        if node.id in CONSTANTS:
            return ast.copy_location(ast.Constant(CONSTANTS[node.id]), node)
        if node.id in FUNCTIONS:
            raise self.fail(f"function '{node.id}' must be called, as {node.id}(...)", node)
        data = f"; data: {', '.join(sorted(self.data))}" if self.data else ""
        raise self.fail(
            f"unknown name '{node.id}' (the variable is '{self.variable}'{data}; "
            f"constants: {', '.join(CONSTANTS)})", node,
        )

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        if isinstance(node.value, ast.Name) and node.value.id in NAMESPACES and node.attr in CONSTANTS:
            return ast.copy_location(ast.Constant(CONSTANTS[node.attr]), node)
        raise self.fail(f"attribute '.{node.attr}' is not allowed here", node)

    # -- operators ----------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        if type(node.op) not in _BINOPS:
            raise self.fail(f"operator {type(node.op).__name__} is not allowed", node)
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, ast.Constant):
            self._check_exponent(right)
        if isinstance(left, ast.Constant) and isinstance(right, ast.Constant):
            return self._fold(node, _BINOPS[type(node.op)], left.value, right.value)
        return ast.copy_location(ast.BinOp(left=left, op=node.op, right=right), node)

    def _check_exponent(self, exponent: ast.Constant) -> None:
        if abs(exponent.value) > self.limits.max_exponent:
            raise self.fail(
                f"exponent {exponent.value:g} is over the limit of {self.limits.max_exponent:g} "
                "(max_exponent)", exponent,
            )

    def _fold(self, node: ast.AST, op: str, a: float, b: float) -> ast.expr:
        try:
            fa, fb = float(a), float(b)
            value = {
                "+": lambda: fa + fb, "-": lambda: fa - fb, "*": lambda: fa * fb,
                "/": lambda: fa / fb, "**": lambda: fa ** fb, "%": lambda: fa % fb,
            }[op]() if op != "@" else None
        except (OverflowError, ZeroDivisionError, ValueError) as exc:
            raise self.fail(f"constant expression cannot be computed ({exc})", node) from None
        if value is None:
            raise self.fail("'@' needs tensors on both sides", node)
        if isinstance(value, complex) or not math.isfinite(value) or abs(value) > self.limits.max_constant:
            raise self.fail(
                f"constant expression is out of range (limit {self.limits.max_constant:g}, max_constant)",
                node,
            )
        exact = op in "+-*" or (op == "**" and b >= 0)  # integer in, integer out: 10**11 stays an index
        if isinstance(a, int) and isinstance(b, int) and exact and value == int(value):
            value = int(value)
        return ast.copy_location(ast.Constant(value), node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        if type(node.op) not in _UNARY:
            raise self.fail(f"unary operator {type(node.op).__name__} is not allowed", node)
        operand = self.visit(node.operand)
        if isinstance(operand, ast.Constant):
            value = -operand.value if isinstance(node.op, ast.USub) else operand.value
            return ast.copy_location(ast.Constant(value), node)
        return ast.copy_location(ast.UnaryOp(op=node.op, operand=operand), node)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        if len(node.ops) != 1 or type(node.ops[0]) not in _COMPARE:
            raise self.fail("only a single comparison (<, <=, >, >=, ==, !=) is allowed", node)
        return ast.copy_location(
            ast.Compare(left=self.visit(node.left), ops=node.ops,
                        comparators=[self.visit(node.comparators[0])]),
            node,
        )

    # -- calls and indexing -------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> ast.expr:
        func = node.func
        receiver: ast.expr | None = None
        if isinstance(func, ast.Name):
            name = func.id
            if name not in FUNCTIONS:
                raise self.fail(f"unknown function '{name}'", func)
        elif isinstance(func, ast.Attribute):
            name = func.attr
            if isinstance(func.value, ast.Name) and func.value.id in NAMESPACES:
                if name not in FUNCTIONS:
                    raise self.fail(f"'{func.value.id}.{name}' is not an allowed function", func)
            else:
                if name not in FUNCTIONS:
                    raise self.fail(f"method '.{name}()' is not allowed", func)
                receiver = self.visit(func.value)
        else:
            raise self.fail("only named functions may be called", func)
        function = FUNCTIONS[name]
        lo, hi, allowed_kw = function.min_args, function.max_args, function.keywords
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail("starred arguments are not allowed", arg)
        args = [self.visit(a) for a in node.args]
        if receiver is not None:
            args.insert(0, receiver)
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.fail(f"{name}() takes {want} arguments, got {len(args)}", node)
        keywords = []
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in allowed_kw:
                shown = "**" if kw.arg is None else kw.arg
                raise self.fail(
                    f"{name}() does not take keyword '{shown}'"
                    + (f" (allowed: {', '.join(sorted(allowed_kw))})" if allowed_kw else ""),
                    kw.value,
                )
            if kw.arg == "keepdim":
                if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool)):
                    raise self.fail("keyword 'keepdim' must be True or False", kw.value)
                keywords.append(kw)
                continue
            keywords.append(ast.keyword(arg=kw.arg, value=self.visit(kw.value)))
        self._check_constant_args(name, function, args, keywords)
        call = ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=args, keywords=keywords)
        return ast.copy_location(call, node)

    def _check_constant_args(self, name: str, function: Function, args: list[ast.expr],
                             keywords: list[ast.keyword]) -> None:
        """Arguments that the table says must be constants of a kind (a dimension, a norm's
        order) are checked here, so a float or ``inf`` dimension is a clear refusal rather than
        a truncation or an OverflowError inside torch."""
        given: list[tuple[int | str, ast.expr]] = [*enumerate(args), *((k.arg, k.value) for k in keywords if k.arg)]
        for key, value in given:
            kind = function.constant_args.get(key)
            if kind == DIM and not _is_int_constant(value):
                raise self.fail(f"{name}(): a dimension must be an integer constant such as 0 or -1", value)
            if kind == ORDER and not self._is_norm_order(value):
                raise self.fail(
                    f"{name}(): the order p must be a constant >= 1 (at most {self.limits.max_exponent:g}, "
                    "max_exponent) or inf", value,
                )
            if kind == EXPONENT and isinstance(value, ast.Constant):
                self._check_exponent(value)

    def _is_norm_order(self, node: ast.expr) -> bool:
        if not isinstance(node, ast.Constant) or type(node.value) not in (int, float):
            return False
        return node.value == math.inf or 1 <= node.value <= self.limits.max_exponent

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        value = self.visit(node.value)
        index = node.slice
        parts = index.elts if isinstance(index, ast.Tuple) else [index]
        checked = [self._index_part(p) for p in parts]
        new_slice = ast.Tuple(elts=checked, ctx=ast.Load()) if isinstance(index, ast.Tuple) else checked[0]
        return ast.copy_location(ast.Subscript(value=value, slice=new_slice, ctx=ast.Load()), node)

    def _index_part(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.Slice):
            bounds = [self._int_constant(b) if b is not None else None
                      for b in (node.lower, node.upper, node.step)]
            if bounds[2] is not None and bounds[2].value <= 0:
                raise self.fail("slice step must be positive", node)
            return ast.Slice(lower=bounds[0], upper=bounds[1], step=bounds[2])
        if isinstance(node, ast.Constant) and node.value is Ellipsis:
            return node
        if isinstance(node, ast.Constant) and node.value is None:
            return node
        return self._int_constant(node)

    def _int_constant(self, node: ast.expr) -> ast.Constant:
        folded = self.visit(node) if isinstance(node, (ast.Constant, ast.UnaryOp, ast.BinOp)) else None
        if not (isinstance(folded, ast.Constant) and isinstance(folded.value, int)):
            raise self.fail("indices must be integer constants, '...' or slices", node)
        return folded


def _is_int_constant(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def _describe(node: ast.AST) -> str:
    names = {
        "Lambda": "a lambda", "ListComp": "a list comprehension", "GeneratorExp": "a generator",
        "DictComp": "a dict comprehension", "SetComp": "a set comprehension",
        "JoinedStr": "an f-string", "NamedExpr": "the walrus operator ':='", "IfExp": "'if/else'",
        "BoolOp": "'and'/'or'", "List": "a list literal", "Dict": "a dict literal",
        "Set": "a set literal", "Tuple": "a tuple", "Await": "'await'", "Yield": "'yield'",
        "Starred": "a starred expression", "Slice": "a slice",
    }
    return names.get(type(node).__name__, f"'{type(node).__name__}'")
