"""Every catalog objective's known minima are real: f(x*) = f* and the gradient vanishes."""
from __future__ import annotations

import pytest
import torch

from service.expr import check_on_shape, compile_expression, parse
from service.spec import check_spec
from service.spec.catalog import CATALOG

REQUIRED = {"parabola", "skewed_parabola", "rosenbrock", "rastrigin", "himmelblau", "beale", "booth",
            "ackley", "styblinski_tang", "matyas", "goldstein_price", "three_hump_camel", "loglog"}


def test_catalog_has_the_named_objectives():
    assert REQUIRED <= set(CATALOG)


CASES = [(name, n) for name, obj in CATALOG.items()
         for n in ([2] if obj.max_elements == 2 else [2, 5]) if obj.minima(n, obj.params)]


@pytest.mark.parametrize("name,n", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_known_minima_are_minima(name, n):
    obj = CATALOG[name]
    f = compile_expression(parse(obj.expression({})))
    for loc, value in obj.minima(n, obj.params):
        x = torch.tensor(loc, dtype=torch.float64, requires_grad=True)
        fx = f(x)
        assert fx.item() == pytest.approx(value, abs=1e-9)
        if name == "ackley":  # a cusp: check every nearby point is higher instead
            for d in torch.eye(n, dtype=torch.float64):
                assert f(x.detach() + 1e-4 * d).item() > fx.item()
                assert f(x.detach() - 1e-4 * d).item() > fx.item()
            continue
        fx.backward()
        assert torch.linalg.vector_norm(x.grad).item() < 1e-6
        # and it is a local minimum: small moves only go up
        for d in torch.eye(n, dtype=torch.float64):
            assert f(x.detach() + 1e-3 * d).item() >= fx.item() - 1e-12


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_default_start_is_a_valid_job(name):
    checked = check_spec({"objective": {"name": name}, "steps": 1})
    check_on_shape(checked.expression, checked.shape)
    assert CATALOG[name].describe()["formula"]
