"""The spec's admission checks: every refusal names the field and says what was expected."""
from __future__ import annotations

import pytest

from service.config import Limits
from service.errors import ErrorCode
from service.spec import SpecError, check_spec

BASE = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 10}


def refused(spec, limits: Limits | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        check_spec(spec, limits)
    return info.value


def test_defaults_are_filled_in():
    out = check_spec(BASE).as_json()
    assert out["optimizer"] == {"name": "sgd", "lr": 0.001}
    assert out["device"] == "auto" and out["dtype"] == "float32" and out["record"]["every"] == 1


BAD = [
    ({**BASE, "bogus": 1}, "bogus", "unknown field"),
    ({**BASE, "steps": "10"}, "steps", "integer"),
    ({**BASE, "steps": 1.5}, "steps", "integer"),
    ({**BASE, "steps": -1}, "steps", "greater than or equal to 0"),
    ({**BASE, "x0": [8, "a"]}, "x0", "numbers"),
    ({**BASE, "x0": [[1, 2], [3]]}, "x0", "rectangular"),
    ({**BASE, "x0": [float("nan"), 1]}, "x0", "finite"),
    ({**BASE, "x0": [True, 1]}, "x0", "numbers"),
    ({**BASE, "x0": []}, "x0", "empty"),
    ({"objective": "x.sum()", "steps": 1}, "x0", "required"),
    ({**BASE, "objective": "x.__class__"}, "objective", "not allowed"),
    ({**BASE, "objective": "x ** 2"}, "objective", "sum("),
    ({**BASE, "objective": 5}, "objective", None),
    ({**BASE, "optimizer": {"name": "sgd", "lr": -1}}, "optimizer.lr", "> 0"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 0.1, "foo": 1}}, "optimizer.foo", "no argument 'foo'"),
    ({**BASE, "optimizer": {"name": "nope"}}, "optimizer.name", "unknown optimizer"),
    ({**BASE, "optimizer": {"name": "adam", "betas": [0.9]}}, "optimizer.betas", "2 numbers"),
    ({**BASE, "optimizer": {"name": "sgd", "lr": 0.1, "nesterov": True}}, "optimizer", "refused"),
    ({**BASE, "optimizer": {"lr": 0.1}}, "optimizer.name", "required"),
    ({**BASE, "scheduler": {"name": "step_lr"}}, "scheduler.step_size", "needs"),
    ({**BASE, "scheduler": {"name": "step_lr", "step_size": 0}}, "scheduler.step_size", ">= 1"),
    ({**BASE, "device": "tpu"}, "device", None),
    ({**BASE, "dtype": "float16"}, "dtype", None),
    ({**BASE, "record": {"every": 0}}, "record.every", None),
    ({**BASE, "stop": {"max_seconds": 0}}, "stop.max_seconds", None),
    ({**BASE, "variable": "1x"}, "variable", None),
    ({**BASE, "variable": "w"}, "objective", "unknown name 'x'"),
    ({"objective": {"name": "nope"}}, "objective.name", "unknown objective"),
    ({"objective": {"name": "booth", "params": {"z": 1}}}, "objective.params.z", "no parameter"),
    ({"objective": {"name": "booth"}, "x0": [1, 2, 3]}, "x0", "2 to 2 elements"),
    ({**BASE, "x0": {"shape": [2], "init": "weird"}}, "x0.init", None),
    ({**BASE, "x0": {"shape": [2], "init": "uniform", "low": 1, "high": 0}}, "x0.high", "greater"),
    ({**BASE, "tags": {"a": 1}}, "tags.a", None),
]


@pytest.mark.parametrize("spec,field,words", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_specs_name_the_field(spec, field, words):
    err = refused(spec)
    assert err.field == field, err.message
    assert err.status in (400, 413)
    if words:
        assert words in err.message


def test_limits_are_named():
    small = Limits(max_elements=10, max_steps=100, max_recorded_values=1000, max_expression_chars=20)
    assert "max_elements" in refused({**BASE, "x0": [0] * 11}, small).message
    assert "max_steps" in refused({**BASE, "steps": 101}, small).message
    err = refused({**BASE, "x0": [0] * 10, "steps": 100}, small)
    assert err.field == "record" and "max_recorded_values" in err.message and err.status == 413
    assert "max_expression_chars" in refused({**BASE, "objective": "x.sum() + " * 3 + "1"}, small).message
    assert "max_elements" in refused({**BASE, "x0": {"shape": [100, 100]}}, small).message


def test_a_repeated_refusal_is_a_fresh_error_each_time():
    """Refusals are remembered per optimiser choice; raising the remembered object again would
    pile each request's traceback onto it."""
    bad = {"objective": "x.sum()", "x0": [1.0], "optimizer": {"name": "sgd", "lr": -1}}
    errors = []
    for _ in range(3):
        with pytest.raises(SpecError) as info:
            check_spec(bad)
        errors.append(info.value)
    assert len({id(e) for e in errors}) == 3 and all(e.field == "optimizer.lr" for e in errors)


def test_errors_survive_pickling_with_every_attribute():
    import pickle

    error = pickle.loads(pickle.dumps(SpecError("x0.shape", "too big", code=ErrorCode.LIMIT_EXCEEDED, status=413)))
    assert (type(error), error.field, error.message, error.code, error.status) == (
        SpecError, "x0.shape", "too big", ErrorCode.LIMIT_EXCEEDED, 413)


def test_choices_are_stored_as_given_under_their_canonical_names():
    out = check_spec({**BASE, "optimizer": {"name": "Adam", "betas": [0.8, 0.9]},
                      "scheduler": {"name": "StepLR", "step_size": 2.0}}).as_json()
    assert out["optimizer"] == {"name": "adam", "betas": [0.8, 0.9]}
    assert out["scheduler"] == {"name": "step_lr", "step_size": 2}


@pytest.mark.parametrize("spec,field,code", [
    ({**BASE, "optimizer": {"name": "sgd", "lr": -1}}, "optimizer.lr", ErrorCode.INVALID_OPTIMIZER),
    ({**BASE, "optimizer": {"name": "nope"}}, "optimizer.name", ErrorCode.INVALID_OPTIMIZER),
    ({**BASE, "scheduler": {"name": "step_lr", "step_size": 1.5}}, "scheduler.step_size", ErrorCode.INVALID_SCHEDULER),
    ({**BASE, "scheduler": {"name": "step_lr"}}, "scheduler.step_size", ErrorCode.INVALID_SCHEDULER),
    ({**BASE, "optimizer": 5}, "optimizer", ErrorCode.INVALID_SPEC),
    ({**BASE, "scheduler": []}, "scheduler", ErrorCode.INVALID_SPEC),
])
def test_choice_refusals_keep_their_fields_and_codes(spec, field, code):
    err = refused(spec)
    assert (err.field, err.code) == (field, code), err.message


def test_each_allowed_class_is_a_model_of_its_arguments():
    from typing import get_args

    from service.spec.choices import OptimizerSpec, SchedulerSpec
    from service.spec.optimizers import OPTIMIZERS, SCHEDULERS, arguments, optimizer_class, scheduler_class

    for union, table, lookup, prefix in ((OptimizerSpec, OPTIMIZERS, optimizer_class, "Optimizer"),
                                         (SchedulerSpec, SCHEDULERS, scheduler_class, "Scheduler")):
        models = get_args(get_args(union)[0])
        assert [m.__name__ for m in models] == [f"{prefix}_{name}" for name in table]
        for model, name in zip(models, table):
            assert list(model.model_fields) == ["name", *arguments(lookup(name))]
