"""Issue 9 at admission: no spec, however crafted, is accepted only to fail or exhaust the worker,
and none makes ``check_spec`` raise anything but a 4xx ``SpecError`` naming the field."""
from __future__ import annotations

import json
import math

import pytest

from service.config import Limits
from service.engine import StopReason
from service.errors import ErrorCode
from service.spec import SpecError, check_spec
from service.spec.model import MAX_SEED
from tests.helpers.engine import run_spec

BASE = {"objective": "sum(x ** 2)", "x0": [1.0, 2.0], "steps": 10}
NAN, INF = float("nan"), float("inf")


def refused(spec: dict, limits: Limits | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        check_spec(spec, limits)
    assert 400 <= info.value.status < 500
    return info.value


# -- 1. memory is bounded at admission --------------------------------------------------------

def test_a_huge_intermediate_is_refused_with_its_estimate_and_the_limit():
    err = refused({**BASE, "objective": "sum(outer(x, x))", "x0": {"shape": [15_000]}, "record": {"x": False}})
    assert (err.status, err.code, err.field) == (413, ErrorCode.LIMIT_EXCEEDED, "objective")
    assert "GiB at peak" in err.message and "(max_objective_bytes)" in err.message


def test_the_estimate_uses_the_specs_dtype():
    """float64 doubles every tensor: a limit between the two estimates admits only float32."""
    spec = {**BASE, "objective": "sum(outer(x, x))", "x0": {"shape": [1_000]}, "record": {"x": False}}
    limits = Limits(max_objective_bytes=20 * 2**20)  # float32 estimate ~12 MiB, float64 ~24 MiB
    check_spec({**spec, "dtype": "float32"}, limits)
    assert refused({**spec, "dtype": "float64"}, limits).field == "objective"


def test_lbfgs_history_must_fit_the_same_ceiling():
    spec = {**BASE, "x0": {"shape": [100_000]}, "record": {"x": False},
            "optimizer": {"name": "lbfgs", "history_size": 10_000}}
    err = refused(spec)
    assert (err.status, err.code, err.field) == (413, ErrorCode.LIMIT_EXCEEDED, "optimizer.history_size")
    assert "max_objective_bytes" in err.message and "history_size" in err.message
    check_spec({**spec, "optimizer": {"name": "lbfgs", "history_size": 10}})


def test_lbfgs_iterations_stay_bounded():
    assert refused({**BASE, "optimizer": {"name": "lbfgs", "max_iter": 10_001}}).field == "optimizer.max_iter"
    assert refused({**BASE, "optimizer": {"name": "lbfgs", "max_eval": 10**6}}).field == "optimizer.max_eval"


def test_the_worker_recheck_without_tracing_still_bounds_the_optimiser():
    spec = {**BASE, "x0": {"shape": [100_000]}, "record": {"x": False},
            "optimizer": {"name": "lbfgs", "history_size": 10_000}}
    with pytest.raises(SpecError):
        check_spec(spec, trace=False)


# -- 2. optimiser, scheduler and seed are tried at admission -----------------------------------

@pytest.mark.parametrize("spec,field", [
    ({**BASE, "seed": 10**30}, "seed"),
    ({**BASE, "seed": -1}, "seed"),
    ({**BASE, "seed": MAX_SEED + 1}, "seed"),
    ({**BASE, "x0": {"shape": [2], "seed": 10**30}}, "x0.seed"),
    ({**BASE, "x0": {"shape": [2], "seed": -5}}, "x0.seed"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 1e308}}, "optimizer.lr"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 1e7}}, "optimizer.lr"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 10**400}}, "optimizer.lr"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 1e13}}, "optimizer.momentum"),
    ({**BASE, "optimizer": {"name": "adam", "betas": [0.9, 1e300]}}, "optimizer.betas"),
    ({**BASE, "optimizer": {"name": "lbfgs", "line_search_fn": "nope"}}, "optimizer"),
    ({**BASE, "scheduler": {"name": "one_cycle_lr", "max_lr": 0.1, "total_steps": 9}}, "scheduler.total_steps"),
    ({**BASE, "scheduler": {"name": "one_cycle_lr", "max_lr": 0.1, "epochs": 3, "steps_per_epoch": 3}},
     "scheduler.epochs"),
    ({**BASE, "scheduler": {"name": "cyclic_lr", "base_lr": 0.1, "max_lr": 1e300}}, "scheduler.max_lr"),
    ({**BASE, "scheduler": {"name": "multi_step_lr", "milestones": list(range(1_001))}}, "scheduler.milestones"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": "w" * 9_000}}, "optimizer"),
    ({**BASE, "objective": "norm(x, p=0)"}, "objective"),
])
def test_what_would_fail_in_the_worker_is_refused_naming_the_field(spec, field):
    assert refused(spec).field == field


def test_the_edges_of_what_is_refused_run():
    """The largest seed, lr and a one-cycle schedule as long as the job all run to the end."""
    result, _, _ = run_spec({**BASE, "steps": 10, "seed": MAX_SEED, "x0": {"shape": [2]},
                             "optimizer": {"name": "sgd", "lr": 1e-3},
                             "scheduler": {"name": "one_cycle_lr", "max_lr": 0.1, "total_steps": 10}})
    assert (result.stop_reason, result.steps) == (StopReason.STEPS, 10)
    result, _, _ = run_spec({**BASE, "steps": 10, "optimizer": {"name": "sgd", "lr": 1e6}})
    assert result.stop_reason in (StopReason.STEPS, StopReason.DIVERGED)
    result, _, _ = run_spec({**BASE, "objective": "norm(x, p=1) + norm(x, inf) + norm(x, 3)", "steps": 3})
    assert (result.stop_reason, result.steps) == (StopReason.STEPS, 3)


def test_norm_with_p_zero_really_cannot_run():
    """Why ``norm(x, p=0)`` is refused: its backward leaves no gradient (torch, not the engine)."""
    import torch

    x = torch.ones(2, requires_grad=True)
    torch.linalg.vector_norm(x, 0).backward()
    assert x.grad is None


# -- 3. no 5xx from any spec ------------------------------------------------------------------

@pytest.mark.parametrize("objective", [
    "sum(x, inf)", "cumsum(x, inf).sum()", "sum(x, dim=-inf)", "mean(x, inf)", "prod(x, inf)",
    "logsumexp(x, inf)", "norm(x, dim=inf)", "sum(x, 1.5)", "x[10**30]", "x[::10**30].sum()",
    "sum(pow(x, 1e308))", "sum(x, 10**11)",
])
def test_impossible_dimensions_and_indices_are_400s(objective):
    err = refused({**BASE, "x0": [[1.0, 2.0], [3.0, 4.0]], "objective": objective})
    assert (err.status, err.field, err.code) == (400, "objective", ErrorCode.INVALID_EXPRESSION)


@pytest.mark.parametrize("objective", ["clamp(x, min=inf).sum()", "where(x > 0, x, inf).sum()", "sum(x % 0)"])
def test_infinite_values_make_valid_jobs_that_diverge(objective):
    result, _, _ = run_spec({**BASE, "objective": objective, "steps": 2})
    assert result.stop_reason in (StopReason.DIVERGED, StopReason.STEPS)


@pytest.mark.parametrize("spec,field", [
    ({**BASE, "x0": [10**400, 1]}, "x0"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 0.1, "x": json.loads("[" * 40 + "]" * 40)}}, "optimizer.x"),
    ({**BASE, "x0": {"shape": [10**30]}}, "x0.shape"),
    ({**BASE, "steps": 10**30}, "steps"),
    ({"objective": {"name": "booth", "params": {"a": 10**400}}}, "objective.params.a"),
])
def test_huge_and_deep_values_are_refused_not_crashed_on(spec, field):
    assert refused(spec).field == field


def test_a_huge_record_every_is_harmless():
    """It keeps the first and the last rows, nothing more."""
    assert check_spec({**BASE, "record": {"every": 10**30}}).spec.record.every == 10**30


# -- 4. non-finite numbers are refused everywhere ---------------------------------------------

@pytest.mark.parametrize("spec,field", [
    ({**BASE, "x0": [NAN, 1.0]}, "x0"),
    ({**BASE, "x0": [INF, 1.0]}, "x0"),
    ({**BASE, "x0": {"shape": [2], "mean": NAN}}, "x0.mean"),
    ({**BASE, "x0": {"shape": [2], "std": INF}}, "x0.std"),
    ({**BASE, "x0": {"shape": [2], "init": "uniform", "low": -INF}}, "x0.low"),
    ({**BASE, "x0": {"shape": [2], "init": "uniform", "high": NAN}}, "x0.high"),
    ({**BASE, "x0": {"shape": [2], "init": "uniform", "low": -1e300, "high": 1e300}}, "x0.low"),
    ({**BASE, "stop": {"grad_norm": NAN}}, "stop.grad_norm"),
    ({**BASE, "stop": {"max_seconds": NAN}}, "stop.max_seconds"),
    ({**BASE, "stop": {"max_seconds": INF}}, "stop.max_seconds"),
    ({"objective": {"name": "booth", "params": {}}, "x0": [1, NAN]}, "x0"),
    ({"objective": {"name": "parabola", "params": {"scale": NAN}}}, "objective.params.scale"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": NAN}}, "optimizer.lr"),
    ({**BASE, "optimizer": {"name": "adam", "betas": [0.9, INF]}}, "optimizer.betas"),
    ({**BASE, "optimizer": {"name": "adam", "eps": -INF}}, "optimizer.eps"),
    ({**BASE, "scheduler": {"name": "step_lr", "step_size": 1, "gamma": NAN}}, "scheduler.gamma"),
    ({**BASE, "scheduler": {"name": "multi_step_lr", "milestones": [1, INF]}}, "scheduler.milestones"),
])
def test_non_finite_numbers_are_refused_naming_the_field(spec, field):
    err = refused(spec)
    assert (err.status, err.field) == (400, field), err.message
    assert "finite" in err.message


def test_accepted_specs_echo_as_strict_json():
    """What is stored is what the API echoes: it must be JSON without NaN or Infinity."""
    spec = {**BASE, "x0": {"shape": [3], "init": "uniform", "low": -1e12, "high": 1e12, "seed": MAX_SEED},
            "stop": {"grad_norm": 1e-8, "max_seconds": 60},
            "optimizer": {"name": "adam", "lr": 1e6, "betas": [0.5, 0.9]}}
    json.dumps(check_spec(spec).as_json(), allow_nan=False)


# -- 5. every string is storable --------------------------------------------------------------

NUL, SURROGATE = "\x00", json.loads('"\\ud800"')


def _strings(bad: str) -> list[tuple[dict, str]]:
    """One spec per string field of the spec, with ``bad`` put into that field."""
    return [
        ({**BASE, "name": f"job{bad}"}, "name"),
        ({**BASE, "tags": {f"k{bad}": "v"}}, "tags"),
        ({**BASE, "tags": {"k": f"v{bad}"}}, "tags.k"),
        ({**BASE, "objective": f"sum(x){bad}"}, "objective"),
        ({"objective": {"name": f"booth{bad}"}}, "objective.name"),
        ({"objective": {"name": "booth", "params": {f"a{bad}": 1}}}, "objective.params"),
        ({**BASE, "variable": f"x{bad}"}, "variable"),
        ({**BASE, "optimizer": {"name": f"sgd{bad}"}}, "optimizer.name"),
        ({**BASE, "optimizer": {"name": "lbfgs", "line_search_fn": f"strong_wolfe{bad}"}}, "optimizer.line_search_fn"),
        ({**BASE, "optimizer": {"name": "sgd", f"lr{bad}": 0.1}}, "optimizer"),
        ({**BASE, "scheduler": {"name": f"step_lr{bad}", "step_size": 1}}, "scheduler.name"),
        ({**BASE, "scheduler": {"name": "cyclic_lr", "base_lr": 0.1, "max_lr": 1, "mode": f"exp_range{bad}"}},
         "scheduler.mode"),
        ({**BASE, "x0": {"shape": [2], "init": f"zeros{bad}"}}, "x0.init"),
        ({**BASE, "device": f"cpu{bad}"}, "device"),
        ({**BASE, "dtype": f"float32{bad}"}, "dtype"),
        ({**BASE, f"extra{bad}": 1}, None),
    ]


@pytest.mark.parametrize("spec,field", _strings(NUL) + _strings(SURROGATE),
                         ids=[f"nul-{i}" for i in range(16)] + [f"surrogate-{i}" for i in range(16)])
def test_nul_and_lone_surrogates_are_refused_in_every_string(spec, field):
    err = refused(spec)
    assert (err.status, err.field) == (400, field)
    assert "NUL" in err.message or "surrogate" in err.message
    assert NUL not in err.message and SURROGATE not in err.message  # the refusal itself is storable


def test_proper_unicode_is_still_welcome_in_names_and_tags():
    check_spec({**BASE, "name": "descente de gradient \U0001f600", "tags": {"équipe": "données"}})


def test_the_json_size_of_optimiser_and_scheduler_is_bounded():
    big = {"name": "multi_step_lr", "milestones": list(range(1, 1000)), "gamma": 0.5}
    err = refused({**BASE, "scheduler": {**big, "milestones": list(range(10**6, 10**6 + 1000))}})
    assert err.field == "scheduler" and "8,192" in err.message
    check_spec({**BASE, "scheduler": big})


def test_numbers_at_the_edge_of_the_magnitude_bound_are_accepted():
    check_spec({**BASE, "x0": [1e12, -1e12]})
    assert math.isclose(check_spec({**BASE, "x0": {"shape": [2], "mean": -1e12, "std": 1e12}}).x0.std, 1e12)
