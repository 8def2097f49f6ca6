"""The objective language: what it accepts, and a hostile corpus it must refuse, quickly."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from service.expr import ExpressionError, check_on_shape, compile_expression, parse, warm_up
from service.expr.functions import FUNCTIONS
from service.spec import SpecError, check_spec
from testkit.corpus import HOSTILE, MEMORY

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
    "norm(x, inf) + norm(x, p=3) + norm(x, 2, dim=0).sum()": torch.linalg.vector_norm(X, torch.inf)
    + torch.linalg.vector_norm(X, 3) + torch.linalg.vector_norm(X, 2, dim=0).sum(),
    "pow(x, 2).sum() + pow(2, x).sum() + cumsum(x, -1).sum()": (X ** 2).sum() + (2 ** X).sum() + X.cumsum(-1).sum(),
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




@pytest.mark.parametrize("case", HOSTILE, ids=[f"h{i}" for i in range(len(HOSTILE))])
def test_hostile_input_is_refused_without_running_anything(case, monkeypatch):
    """Refused by admission with a 4xx naming the objective, and nothing handed to eval/exec
    (how fast: benchmarks/expr.py)."""
    calls = []
    monkeypatch.setattr("builtins.eval", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("builtins.exec", lambda *a, **k: calls.append(a))
    spec = {"objective": case.text, "x0": {"shape": list(case.shape), "init": "zeros"}, "steps": 1}
    with pytest.raises(SpecError) as info:
        check_spec(spec)
    assert not calls
    assert 400 <= info.value.status < 500 and info.value.field == "objective" and info.value.message


def test_the_corpus_is_large_and_covers_memory_exhaustion():
    assert len(HOSTILE) >= 150
    assert len(MEMORY) >= 10 and all(case in HOSTILE for case in MEMORY)


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch {path}')",
    "open('{path}', 'w')",
    "torch.save(x, '{path}')",
    "x.__class__.__mro__[-1].__subclasses__()[0]('{path}')",
])
def test_a_sandbox_escape_has_no_effect(text, tmp_path):
    target = tmp_path / "pwned"
    with pytest.raises(SpecError):
        check_spec({"objective": text.format(path=target), "x0": [[1.0, 2.0]], "steps": 1})
    assert not target.exists()


def test_refusal_points_at_the_offending_part():
    with pytest.raises(ExpressionError) as info:
        parse("x.sum() + x.__class__")
    assert info.value.column == 11 and "'.__class__'" in str(info.value) and "^" in str(info.value)


@pytest.mark.parametrize("text", [
    "sum(x, inf)", "sum(x, -inf)", "sum(x, dim=-inf)", "cumsum(x, inf).sum()", "mean(x, inf)", "prod(x, inf)",
    "logsumexp(x, inf)", "norm(x, dim=inf)", "sum(x, 1.5)", "sum(x, dim=0.5).sum()", "cumsum(x, x).sum()",
])
def test_a_dimension_must_be_an_integer_constant(text):
    with pytest.raises(ExpressionError, match="a dimension must be an integer constant"):
        parse(text)


@pytest.mark.parametrize("text", ["norm(x, p=0)", "norm(x, 0)", "x.norm(0)", "norm(x, p=0.5)", "norm(x, -1)",
                                  "norm(x, p=-inf)", "norm(x, p=1001)", "norm(x, p=x)"])
def test_a_norm_order_must_be_at_least_one_or_inf(text):
    with pytest.raises(ExpressionError, match=r"the order p must be a constant >= 1"):
        parse(text)


def test_pow_obeys_the_exponent_limit_like_the_operator():
    with pytest.raises(ExpressionError, match="max_exponent"):
        parse("pow(x, 1001).sum()")
    parse("pow(x, x).sum() + pow(x, 1000).sum()")


def test_an_objective_without_a_gradient_is_refused():
    """The trace runs backward too: a function whose derivative torch does not have, or that
    leaves x without a gradient, is refused at admission instead of failing in the worker."""
    with pytest.raises(ExpressionError, match="derivative for aten::remainder is not implemented"):
        check_on_shape(parse("sum(2 % x)"), (2, 2))


@pytest.mark.parametrize("error", [OverflowError, ZeroDivisionError, NotImplementedError, KeyError,
                                   AttributeError, ArithmeticError, RecursionError])
def test_any_exception_in_the_trace_is_a_refusal(error, monkeypatch):
    """Whatever torch raises while tracing becomes an ExpressionError (a 400), never a 500."""
    monkeypatch.setitem(FUNCTIONS, "exp", replace(FUNCTIONS["exp"], impl=_raiser(error)))
    with pytest.raises(ExpressionError, match="cannot be evaluated"):
        check_on_shape(parse("sum(exp(x))"), (2, 2))


def test_memory_error_is_never_turned_into_a_verdict(monkeypatch):
    monkeypatch.setitem(FUNCTIONS, "exp", replace(FUNCTIONS["exp"], impl=_raiser(MemoryError)))
    with pytest.raises(MemoryError):
        check_on_shape(parse("sum(exp(x))"), (2, 2))


def _raiser(error: type[BaseException]):
    def impl(*args, like):
        raise error("boom")
    return impl


def test_the_trace_estimates_peak_bytes_of_intermediates_and_gradient():
    """Forward and backward intermediates plus x: outer(x, x) at n elements makes n*n values in
    the forward pass and gradients of them in the backward pass."""
    n = 15_000
    estimate = check_on_shape(parse("sum(outer(x, x))"), (n,), torch.float32)
    assert 2 * n * n * 4 < estimate < 4 * n * n * 4
    assert check_on_shape(parse("sum(outer(x, x))"), (n,), torch.float64) == 2 * estimate
    small = check_on_shape(parse("sum(x ** 2)"), (1000,), torch.float32)
    assert 1000 * 4 * 2 <= small < 1000 * 4 * 10


def test_the_trace_handles_the_largest_shapes_without_memory():
    """A meta trace allocates nothing, whatever the shape (its speed is in benchmarks/expr.py)."""
    peak = check_on_shape(parse("sum(outer(x, x)) + logsumexp(x) + norm(x, 3)"), (1_000_000,))
    assert peak >= 1_000_000 ** 2 * 4


def test_an_objective_that_leaves_x_without_a_gradient_is_refused(monkeypatch):
    """The backstop behind the norm order rule: torch's norm with p=0 has a grad_fn, yet its
    backward leaves x.grad empty, and the worker would fail reading the gradient."""
    counts = replace(FUNCTIONS["exp"], impl=lambda a, *, like: torch.linalg.vector_norm(a, 0))
    monkeypatch.setitem(FUNCTIONS, "exp", counts)
    with pytest.raises(ExpressionError, match="no gradient with respect to 'x'"):
        check_on_shape(parse("exp(x)"), (2, 2))
