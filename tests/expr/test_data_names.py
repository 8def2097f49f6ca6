"""The objective language reads data tensors by name, besides its variable."""
from __future__ import annotations

import pytest
import torch

from service.expr import ExpressionError, check_on_shape, compile_expression, parse


def test_data_names_are_read_in_order_and_compiled_to_their_tensors() -> None:
    expr = parse("((A @ x - b) ** 2).sum() + 0 * A[0, 0]", data=("b", "A", "unused"))
    assert expr.data == ("A", "b")
    f = compile_expression(expr, {"A": torch.eye(2), "b": torch.tensor([1.0, 2.0])})
    assert f(torch.tensor([1.0, 2.0])).item() == 0.0
    assert f(torch.tensor([0.0, 0.0])).item() == 5.0


def test_an_unknown_name_lists_the_data_names() -> None:
    with pytest.raises(ExpressionError, match=r"unknown name 'c' \(the variable is 'x'; data: A, b"):
        parse("(c * x).sum()", data=("A", "b"))


def test_compiling_without_the_data_read_is_an_error() -> None:
    with pytest.raises(ValueError, match="data tensor 'A'"):
        compile_expression(parse("(A * x).sum()", data=("A",)))


def test_the_trace_takes_the_data_shapes_and_counts_their_bytes() -> None:
    expr = parse("(A @ x).sum()", data=("A",))
    small = check_on_shape(expr, (3,), torch.float32, {"A": (4, 3)})
    big = check_on_shape(expr, (3,), torch.float32, {"A": (4000, 3)})
    assert big - small >= (4000 - 4) * 3 * 4
    with pytest.raises(ExpressionError, match="cannot be evaluated"):
        check_on_shape(expr, (3,), torch.float32, {"A": (4, 5)})
