"""The objective language: what it accepts, and a hostile corpus it must refuse, quickly."""
from __future__ import annotations

import pytest
import torch

from service.expr import ExpressionError, check_on_shape, compile_expression, parse
from testkit.corpus import HOSTILE

X = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float64)

ACCEPTED = {
    "10 * (x ** 2).sum()": 10 * (X ** 2).sum(),
    "torch.log(torch.log(x + 7)).prod()": torch.log(torch.log(X + 7)).prod(),
    "x[0, 0] - x[1, 1] / 2": X[0, 0] - X[1, 1] / 2,
    "x[..., 1].sum()": X[..., 1].sum(),
    "sum(x[1:] ** 2)": (X[1:] ** 2).sum(),
    "torch.sum(x @ x)": (X @ X).sum(),
    "-x.abs().max() + +x.min()": -X.abs().max() + X.min(),
    "sqrt(exp(x[0]).sum()) + log1p(x.abs()).mean()": torch.sqrt(torch.exp(X[0]).sum()) + torch.log1p(X.abs()).mean(),
    "sin(x).sum() * cos(pi) + tan(x[0, 0]) + tanh(x).sum()": torch.sin(X).sum() * -1 + torch.tan(X[0, 0]) + torch.tanh(X).sum(),
    "sigmoid(x).sum() + relu(x).sum() + softplus(x).sum()": torch.sigmoid(X).sum() + torch.relu(X).sum() + torch.nn.functional.softplus(X).sum(),
    "square(x).sum() + clamp(x, min=0).sum() + x.clamp(-1, 1).sum()": (X ** 2).sum() + X.clamp(min=0).sum() + X.clamp(-1, 1).sum(),
    "norm(x) + x.norm(1) + dot(x[0], x[1])": torch.linalg.vector_norm(X) + torch.linalg.vector_norm(X, 1) + torch.dot(X[0], X[1]),
    "mean(x) + prod(x) + max(x[0], x[1]).sum()": X.mean() + X.prod() + torch.maximum(X[0], X[1]).sum(),
    "where(x > 0, x, -x).sum() + e": torch.where(X > 0, X, -X).sum() + torch.e,
    "x.sum(dim=0)[1] + x.sum(1, keepdim=True)[0, 0]": X.sum(0)[1] + X.sum(1, keepdim=True)[0, 0],
    "(x - 1) ** 2 .sum() if False else (x % 2).sum()": None,  # refused below: if/else
}


@pytest.mark.parametrize("text", [t for t, v in ACCEPTED.items() if v is not None])
def test_accepted_expressions_compute_like_torch(text):
    expr = parse(text)
    check_on_shape(expr, (2, 2), torch.float64)
    got = compile_expression(expr)(X.clone().requires_grad_(True))
    torch.testing.assert_close(got.detach(), ACCEPTED[text].to(torch.float64))


def test_method_and_function_spellings_agree():
    a = compile_expression(parse("x.exp().sum()"))(X)
    b = compile_expression(parse("sum(exp(x))"))(X)
    c = compile_expression(parse("torch.sum(torch.exp(x))"))(X)
    assert a == b == c


def test_non_scalar_result_suggests_sum():
    with pytest.raises(ExpressionError, match=r"wrap it in sum"):
        check_on_shape(parse("x ** 2"), (3,))




@pytest.mark.parametrize("text", HOSTILE, ids=[f"h{i}" for i in range(len(HOSTILE))])
def test_hostile_input_is_refused_without_running_anything(text, monkeypatch):
    """Refused, with a message, and nothing handed to eval/exec (how fast: benchmarks/expr.py)."""
    calls = []
    monkeypatch.setattr("builtins.eval", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("builtins.exec", lambda *a, **k: calls.append(a))
    with pytest.raises(ExpressionError) as info:
        expr = parse(text)
        check_on_shape(expr, (2, 2))
    assert not calls
    assert str(info.value)


def test_refusal_points_at_the_offending_part():
    with pytest.raises(ExpressionError) as info:
        parse("x.sum() + x.__class__")
    assert info.value.column == 11 and "'.__class__'" in str(info.value) and "^" in str(info.value)
