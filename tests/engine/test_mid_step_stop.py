"""Stops inside one long optimiser step (LBFGS evaluates its closure up to max_iter times per step):
a cancel or the time limit aborts the step and ends the run at the last completed step; a
hand-back finishes the step first, so its checkpoint is consistent. Counted in evaluations and
stop checks, never in wall time."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from service.engine import Chunking, StopReason, loop, run
from service.spec import check_spec
from tests.helpers.engine import run_spec

# A fixed-step LBFGS that uses every one of its max_iter iterations: 19 re-evaluations per step
# (the first reuses the evaluation at x_t, the last iteration evaluates nothing).
LBFGS = {"name": "lbfgs", "lr": 1e-3, "max_iter": 20, "tolerance_grad": -1, "tolerance_change": -1}
SPEC = {"objective": "((x - 3) ** 2).sum() + (x ** 4).sum() / 100", "x0": [1.0, -2.0, 0.5], "steps": 6,
        "optimizer": LBFGS, "dtype": "float64", "record": {"every": 5, "grad": True}}
NO_CHUNKS = {"chunking": Chunking(seconds=3600.0, rows=1_000_000)}  # no chunk boundary asks should_stop


@pytest.fixture
def evaluations(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Counts evaluations of the objective (one element per call)."""
    calls: list[int] = []
    real = loop.compile_expression

    def counting(expression: Any, data: Any = None):  # type: ignore[no-untyped-def]
        objective = real(expression, data)

        def evaluate(x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return objective(x)

        return evaluate

    monkeypatch.setattr(loop, "compile_expression", counting)
    return calls


@pytest.fixture
def ask_every_evaluation(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(loop, "STOP_CHECK_SECONDS", 0.0)


def stop_at(schedule: dict[int, StopReason]):  # type: ignore[no-untyped-def]
    """A should_stop answering ``schedule[n]`` on its n-th call (1-based), else None."""
    asked = [0]

    def should_stop() -> StopReason | None:
        asked[0] += 1
        return schedule.get(asked[0])

    should_stop.asked = asked  # type: ignore[attr-defined]
    return should_stop


def test_a_cancel_mid_step_aborts_it_and_ends_at_the_last_completed_step(evaluations, ask_every_evaluation):
    stop = stop_at({50: StopReason.CANCELLED})  # the 12th check inside step 2 (checks 39..57)
    result, rows, chunks = run_spec(SPEC, should_stop=stop, **NO_CHUNKS)
    assert result.stop_reason == StopReason.CANCELLED and result.steps == 2
    assert stop.asked[0] == 50
    # steps 0 and 1 in full (1 + 19 evaluations each), then 1 + 11 in step 2 before the abort
    assert len(evaluations) == 2 * 20 + 1 + 11
    # the last row is step 2 (recorded although every=5), and the result is that very point
    assert [r["step"] for r in rows] == [0, 2] and chunks[-1].final
    assert result.x.tolist() == rows[-1]["x"] and result.f == rows[-1]["f"] and result.grad.tolist() == rows[-1]["grad"]
    two_steps, _, _ = run_spec({**SPEC, "steps": 2})
    assert result.x.tolist() == two_steps.x.tolist() and result.f == two_steps.f and result.grad_norm == two_steps.grad_norm


def test_a_step_of_ten_thousand_evaluations_stops_at_the_first_check_that_says_so(evaluations, ask_every_evaluation):
    spec = {**SPEC, "optimizer": {**LBFGS, "max_iter": 10_000}}
    result, rows, _ = run_spec(spec, should_stop=stop_at({3: StopReason.CANCELLED}), **NO_CHUNKS)
    assert result.stop_reason == StopReason.CANCELLED and result.steps == 0
    assert len(evaluations) == 1 + 2
    assert result.x.tolist() == SPEC["x0"] and [r["step"] for r in rows] == [0]


class FakeClock:
    """``time`` for the loop module: it advances one second per evaluation of the objective."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def ticking_clock(monkeypatch: Any, seconds_per_evaluation: float) -> FakeClock:
    """The loop's clock, faked, moving on by ``seconds_per_evaluation`` at each evaluation."""
    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)
    real = loop.compile_expression

    def ticking(expression: Any, data: Any = None):  # type: ignore[no-untyped-def]
        objective = real(expression, data)

        def evaluate(x: torch.Tensor) -> torch.Tensor:
            clock.now += seconds_per_evaluation
            return objective(x)

        return evaluate

    monkeypatch.setattr(loop, "compile_expression", ticking)
    return clock


def test_the_time_limit_stops_a_long_step(evaluations, monkeypatch):
    ticking_clock(monkeypatch, 1.0)
    spec = {**SPEC, "optimizer": {**LBFGS, "max_iter": 10_000}, "stop": {"max_seconds": 2.5}}
    result, rows, _ = run_spec(spec)
    # evaluations at t = 0 -> 1 s, 1 -> 2 s, 2 -> 3 s; the next check sees 3 s >= 2.5 s
    assert result.stop_reason == StopReason.TIME_LIMIT and result.steps == 0
    assert len(evaluations) == 3
    assert result.x.tolist() == SPEC["x0"] and [r["step"] for r in rows] == [0]


def test_should_stop_is_asked_at_most_every_stop_check_seconds_inside_a_step(monkeypatch):
    ticking_clock(monkeypatch, 0.1)
    stop = stop_at({})
    result, _, _ = run_spec({**SPEC, "steps": 1, "optimizer": {**LBFGS, "max_iter": 100}}, should_stop=stop, **NO_CHUNKS)
    assert result.stop_reason == StopReason.STEPS
    # 100 evaluations of 0.1 s: about 10 s of fake time, asked about every 0.5 s, not 99 times
    assert 15 <= stop.asked[0] <= 21


def test_a_hand_back_mid_step_finishes_the_step_then_resumes_bit_for_bit(evaluations, ask_every_evaluation):
    full, full_rows, _ = run_spec(SPEC)
    checked = check_spec(SPEC)
    chunks: list[Any] = []
    before = len(evaluations)
    # asked once only, 10 checks into step 0: the run must remember it until the step ends
    first = run(checked, on_chunk=chunks.append, should_stop=stop_at({10: StopReason.INTERRUPTED}), **NO_CHUNKS)
    assert first.stop_reason == StopReason.INTERRUPTED and first.steps == 1
    assert not chunks[-1].final and chunks[-1].end == 1 and chunks[-1].checkpoint is not None
    assert len(evaluations) - before == 20 + 1  # step 0 in full, then x_1 evaluated, then handed back
    rest = run(checked, on_chunk=chunks.append, resume=chunks[-1].checkpoint)
    rows = [r for c in chunks for r in c.rows.as_dicts()]
    assert rows == full_rows
    assert rest.x.tolist() == full.x.tolist() and rest.f == full.f and rest.steps == full.steps == 6


def test_a_cancel_after_a_pending_hand_back_still_aborts_the_step(ask_every_evaluation):
    stop = stop_at({5: StopReason.INTERRUPTED, 8: StopReason.CANCELLED})
    result, rows, _ = run_spec(SPEC, should_stop=stop, **NO_CHUNKS)
    assert result.stop_reason == StopReason.CANCELLED and result.steps == 0
    assert result.x.tolist() == SPEC["x0"] and [r["step"] for r in rows] == [0]
