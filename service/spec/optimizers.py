"""The allow-list of ``torch.optim`` optimisers and learning-rate schedulers.

Keyword arguments are checked against the real constructor signatures (type from the default
value, plus ranges for the usual hyper-parameters; every number finite and within 1e12, ``lr`` at
most 1e6), then the optimiser is built on a scratch tensor and takes one step, and the scheduler
is built on it, so torch's own checks speak at admission rather than in the worker. The engine
uses these same classes, never a copy.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from pydantic_core import PydanticCustomError

from service.errors import ErrorCode, first_line
from service.spec.error import SpecError
from service.spec.values import MAX_MAGNITUDE, in_range

OPTIMIZERS: dict[str, str] = {
    "sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam",
    "radam": "RAdam", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta",
    "asgd": "ASGD", "rprop": "Rprop", "lbfgs": "LBFGS",
}
SCHEDULERS: dict[str, str] = {
    "step_lr": "StepLR", "multi_step_lr": "MultiStepLR", "exponential_lr": "ExponentialLR",
    "cosine_annealing_lr": "CosineAnnealingLR",
    "cosine_annealing_warm_restarts": "CosineAnnealingWarmRestarts", "linear_lr": "LinearLR",
    "constant_lr": "ConstantLR", "polynomial_lr": "PolynomialLR", "one_cycle_lr": "OneCycleLR",
    "cyclic_lr": "CyclicLR", "reduce_lr_on_plateau": "ReduceLROnPlateau",
}
# Arguments that are about how torch runs, not about the maths: the engine owns them.
_INTERNAL = {"params", "optimizer", "foreach", "fused", "capturable", "differentiable", "verbose",
             "last_epoch", "lr_lambda", "scale_fn"}
INTEGER_ARGS = {"max_iter", "max_eval", "history_size", "step_size", "T_max", "T_0", "T_mult",
                 "total_iters", "total_steps", "patience", "cooldown", "step_size_up",
                 "step_size_down", "epochs", "steps_per_epoch"}
MAX_LR = 1e6  # far above any useful step size, far below float32's overflow (3.4e38)
MAX_LIST = 1_000  # numbers in a list argument (MultiStepLR's milestones)
MAX_CHOICE_JSON = 8_192  # characters of the optimizer object, and of the scheduler object
# name -> (low, high, low inclusive); enforced on top of the type check (and of MAX_MAGNITUDE).
RANGES: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, MAX_LR, False), "max_lr": (0.0, MAX_LR, False), "base_lr": (0.0, MAX_LR, True),
    "momentum": (0.0, math.inf, True),
    "dampening": (0.0, 1.0, True), "weight_decay": (0.0, math.inf, True),
    "eps": (0.0, math.inf, True), "alpha": (0.0, math.inf, True), "rho": (0.0, 1.0, True),
    "lr_decay": (0.0, math.inf, True), "gamma": (0.0, math.inf, False),
    "momentum_decay": (0.0, math.inf, True), "lambd": (0.0, math.inf, True),
    "t0": (0.0, math.inf, True), "initial_accumulator_value": (0.0, math.inf, True),
    "max_iter": (1, 10_000, True), "max_eval": (1, 12_500, True), "history_size": (1, 10_000, True),
    "step_size": (1, math.inf, True), "T_max": (1, math.inf, True), "T_0": (1, math.inf, True),
    "T_mult": (1, math.inf, True), "total_iters": (0, math.inf, True),
    "total_steps": (1, math.inf, True), "patience": (0, math.inf, True),
    "factor": (0.0, 1.0, False), "power": (0.0, math.inf, True),
}


def refusal(field: str, message: str) -> SpecError:
    """A refused optimiser or scheduler choice; ``field`` is a dotted path inside the spec, and
    its root says which of the two the code names."""
    scheduler = field.split(".", 1)[0] == "scheduler"
    return SpecError(field, message, code=ErrorCode.INVALID_SCHEDULER if scheduler else ErrorCode.INVALID_OPTIMIZER)


@dataclass(frozen=True)
class Choice:
    """A checked choice: the canonical name, the torch class and its keyword arguments; for an
    optimiser, how many x-sized tensors it keeps as state between steps (its memory)."""

    name: str
    cls: type
    kwargs: dict[str, Any]
    state_vectors: int = 0


def canonical(name: str, table: dict[str, str]) -> str | None:
    key = name.replace("_", "").lower()
    for snake, cls_name in table.items():
        if key in (snake.replace("_", ""), cls_name.lower()):
            return snake
    return None


def optimizer_class(name: str) -> type:
    return getattr(torch.optim, OPTIMIZERS[name])


def scheduler_class(name: str) -> type:
    return getattr(torch.optim.lr_scheduler, SCHEDULERS[name])


def arguments(cls: type) -> dict[str, Any]:
    """The user-settable constructor arguments of ``cls`` with their defaults."""
    params = inspect.signature(cls.__init__).parameters
    return {
        n: (None if p.default is inspect.Parameter.empty else p.default)
        for n, p in params.items()
        if n != "self" and n not in _INTERNAL and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def required_arguments(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items()
            if n not in ("self", *_INTERNAL) and p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _check_value(field: str, name: str, value: Any, default: Any) -> Any:
    def fail(expected: str) -> SpecError:
        return refusal(f"{field}.{name}", f"'{name}' must be {expected}, got {value!r:.60}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise fail(f"a list of {len(default)} numbers")
        return tuple(_check_value(field, name, v, d) for v, d in zip(value, default))
    if isinstance(default, str) or (default is None and isinstance(value, str)):
        if not isinstance(value, str) or len(value) > 64:
            raise fail("a short string")
        return value
    if value is None and default is None:
        return None
    if isinstance(value, list) and default is None:
        if len(value) <= MAX_LIST and all(_is_number(v) and in_range(v) for v in value):
            return list(value)
        raise fail(f"a number, or a list of at most {MAX_LIST} finite numbers within ±{MAX_MAGNITUDE:g}")
    if not _is_number(value):
        raise fail("a number")
    if not in_range(value):
        raise fail(f"a finite number within ±{MAX_MAGNITUDE:g}")
    if name in INTEGER_ARGS and float(value) != int(value):
        raise fail("an integer")
    if name in RANGES:
        lo, hi, inclusive = RANGES[name]
        if value > hi or value < lo or (value == lo and not inclusive):
            bound = f">= {lo:g}" if inclusive else f"> {lo:g}"
            raise fail(f"{bound}" + (f" and <= {hi:g}" if math.isfinite(hi) else ""))
    return int(value) if name in INTEGER_ARGS else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(field: str, raw: dict[str, Any], table: dict[str, str], kind: str, lookup: Any) -> Choice:
    raw = dict(raw)
    name = raw.pop("name", None)
    if not isinstance(name, str):
        raise refusal(f"{field}.name", f"{kind} 'name' is required: one of {', '.join(table)}")
    snake = canonical(name, table)
    if snake is None:
        raise refusal(f"{field}.name", f"unknown {kind} '{name:.40}'; allowed: {', '.join(table)}")
    cls = lookup(snake)
    allowed = arguments(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            raise refusal(
                f"{field}.{key}",
                f"{kind} '{snake}' has no argument '{key:.40}'; allowed: {', '.join(sorted(allowed))}",
            )
        kwargs[key] = _check_value(field, key, value, allowed[key])
    missing = [n for n in required_arguments(cls) if n not in kwargs]
    if missing:
        raise refusal(f"{field}.{missing[0]}", f"{kind} '{snake}' needs '{missing[0]}'")
    return Choice(snake, cls, kwargs)


_KINDS = {"optimizer": (OPTIMIZERS, optimizer_class), "scheduler": (SCHEDULERS, scheduler_class)}


def admitted(raw: Any, kind: str) -> Any:
    """``raw`` (the optimizer or scheduler object of a spec) with its name canonical and its
    arguments checked as ``check_optimizer`` checks them, for the models of ``service.spec.choices``
    to validate; anything but an object is left to them. A refusal is a pydantic error of type
    ``invalid_choice`` whose context holds the message, the field below ``kind`` (``at``) and the code."""
    if not isinstance(raw, dict):
        return raw
    table, lookup = _KINDS[kind]
    try:
        size = len(json.dumps(raw, sort_keys=True))
        if size > MAX_CHOICE_JSON:
            raise SpecError(kind, f"'{kind}' takes {size:,} characters of JSON, over {MAX_CHOICE_JSON:,}")
        choice = _check(kind, raw, table, kind, lookup)
    except SpecError as exc:
        raise PydanticCustomError("invalid_choice", "{message}", {
            "message": exc.message, "at": (exc.field or "").partition(".")[2], "code": str(exc.code)}) from None
    return {"name": choice.name, **choice.kwargs}


def check_optimizer(raw: dict[str, Any], field: str = "optimizer") -> Choice:
    """The checked optimiser, tried for one step; its ``state_vectors`` filled in."""
    choice = _check(field, raw, OPTIMIZERS, "optimizer", optimizer_class)
    try:
        vectors = _trial_step(choice)
    except MemoryError:
        raise
    except Exception as exc:  # torch's checks raise ValueError, RuntimeError, TypeError, ...
        raise refusal(field, f"optimizer '{choice.name}' refused its arguments: {first_line(exc, 300)}") from None
    return Choice(choice.name, choice.cls, choice.kwargs, vectors)


_SCRATCH = 3  # elements of the trial's x: tells x-sized state from scalar state (step counts)


def _trial_step(choice: Choice) -> int:
    """Build the optimiser on a scratch x and take one step on a small quadratic, so that torch's
    checks at construction and at the first step (LBFGS's ``line_search_fn``, a float that
    overflows float32) refuse the arguments now. Returns how many x-sized tensors it keeps.
    LBFGS's history fills over many steps, so its count is worked out: ``2 * history_size``
    directions and steps, plus its search direction, last gradient and flat gradient, and the
    copies of x and its gradient the engine keeps across a long step (to stop inside it)."""
    lbfgs = choice.cls is torch.optim.LBFGS
    kwargs = {**choice.kwargs, "max_iter": 1} if lbfgs else choice.kwargs  # one iteration suffices to try it
    x = torch.zeros(_SCRATCH, requires_grad=True)
    opt = choice.cls([x], **kwargs)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (x - 1).square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    if lbfgs:
        history = choice.kwargs.get("history_size", arguments(choice.cls)["history_size"])
        return 2 * history + 5
    return sum(1 for state in opt.state.values() for value in state.values()
               if isinstance(value, torch.Tensor) and value.numel() == _SCRATCH)


def check_scheduler(raw: dict[str, Any], optimizer: Choice, field: str = "scheduler") -> Choice:
    choice = _check(field, raw, SCHEDULERS, "scheduler", scheduler_class)
    try:
        opt = optimizer.cls([torch.zeros(1, requires_grad=True)], **optimizer.kwargs)
        choice.cls(opt, **choice.kwargs)
    except MemoryError:
        raise
    except Exception as exc:  # ValueError, TypeError, KeyError, ZeroDivisionError, ...
        raise refusal(field, f"scheduler '{choice.name}' refused its arguments: {first_line(exc, 300)}") from None
    return choice


def check_schedule_length(scheduler: Choice, steps: int, field: str = "scheduler") -> None:
    """OneCycleLR plans a fixed number of steps (``total_steps``, or ``epochs *
    steps_per_epoch``) and raises at the first step past them; a job of more steps is refused
    now rather than failing part way."""
    if scheduler.cls is not torch.optim.lr_scheduler.OneCycleLR:
        return
    total = scheduler.kwargs.get("total_steps")
    if total is not None:
        if total < steps:
            raise refusal(f"{field}.total_steps", f"one_cycle_lr's total_steps ({total:,}) is below the "
                          f"job's steps ({steps:,}); it must be at least steps")
        return
    planned = (scheduler.kwargs.get("epochs") or 0) * (scheduler.kwargs.get("steps_per_epoch") or 0)
    if planned < steps:
        raise refusal(f"{field}.epochs", f"one_cycle_lr's epochs * steps_per_epoch ({planned:,}) is below the "
                      f"job's steps ({steps:,}); it must be at least steps")


def describe() -> dict[str, object]:
    """The allow-lists with each class's arguments and defaults, for ``GET /v1/optimizers``."""
    def show(table: dict[str, str], lookup: Any) -> list[dict[str, object]]:
        out = []
        for snake in table:
            cls = lookup(snake)
            args = {k: (v if isinstance(v, (int, float, str, bool, type(None), tuple, list)) else repr(v))
                    for k, v in arguments(cls).items()}
            out.append({"name": snake, "torch": f"{cls.__module__}.{cls.__name__}", "arguments": args,
                        "required": required_arguments(cls)})
        return out

    return {"optimizers": show(OPTIMIZERS, optimizer_class), "schedulers": show(SCHEDULERS, scheduler_class)}
