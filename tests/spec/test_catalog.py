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


# Data for the objectives of data: 30 points, 3 features (the last a constant), labels that overlap.
_GEN = torch.Generator().manual_seed(7)
_A = torch.cat([torch.randn(30, 2, generator=_GEN, dtype=torch.float64), torch.ones(30, 1, dtype=torch.float64)], 1)
DATA = {"A": _A, "b": _A @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64) + 0.3 * torch.randn(30, generator=_GEN, dtype=torch.float64),
        "y": (_A[:, 0] + 0.8 * torch.randn(30, generator=_GEN, dtype=torch.float64) > 0).to(torch.float64)}


def _data_of(name):
    return {k: DATA[k].tolist() for k in CATALOG[name].data}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_default_start_is_a_valid_job(name):
    checked = check_spec({"objective": {"name": name}, "steps": 1, "data": _data_of(name)})
    check_on_shape(checked.expression, checked.shape, data=checked.data_shapes)
    assert CATALOG[name].describe()["formula"]
    assert CATALOG[name].describe()["data"] == list(CATALOG[name].data)


@pytest.mark.parametrize("name", [n for n, obj in CATALOG.items() if obj.data])
def test_minima_of_data_are_minima(name):
    obj = CATALOG[name]
    data = {k: DATA[k] for k in obj.data}
    [(loc, value)] = obj.known_minima(3, {}, data)
    f = compile_expression(parse(obj.expression({}), data=obj.data), data)
    x = torch.tensor(loc, dtype=torch.float64, requires_grad=True)
    fx = f(x)
    assert fx.item() == pytest.approx(value, abs=1e-12)
    fx.backward()
    assert torch.linalg.vector_norm(x.grad).item() < 1e-9
    for d in torch.eye(3, dtype=torch.float64):
        assert f(x.detach() + 1e-3 * d).item() > fx.item()


def test_an_objective_of_data_says_which_data_it_lacks():
    with pytest.raises(Exception) as err:
        check_spec({"objective": {"name": "least_squares"}, "data": {"A": [[1.0]]}})
    assert err.value.field == "data.b" and "'least_squares' reads the data tensors A, b" in err.value.message
