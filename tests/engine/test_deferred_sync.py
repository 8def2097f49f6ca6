"""Deferred reads (the CUDA path, run here on the CPU): f and the gradient norms stay on the
device through a chunk, and a stop inside the chunk re-runs it with per-step checks, so the
history, the stop step and the result are exactly those of a per-step run."""
from __future__ import annotations

from typing import Any

import pytest

from service.engine import Chunking, StopReason, replay, run
from service.spec import check_spec
from tests.helpers.engine import run_spec

BOWL = {"objective": "10 * (x ** 2).sum()", "x0": [8.0, 8.0], "steps": 300, "optimizer": {"name": "sgd", "lr": 0.001}}
CASES = {
    "steps": BOWL,
    "adam, step lr, every 7th row, x and grad": {
        **BOWL, "optimizer": {"name": "adam", "lr": 0.05}, "scheduler": {"name": "step_lr", "step_size": 40},
        "record": {"every": 7, "x": True, "grad": True}},
    "diverges mid-chunk": {**BOWL, "optimizer": {"name": "sgd", "lr": 0.2}, "steps": 2000},
    "diverges mid-chunk, a scheduler moving lr": {**BOWL, "optimizer": {"name": "sgd", "lr": 0.12}, "steps": 2000,
                                                  "scheduler": {"name": "exponential_lr", "gamma": 1.01}},
    "gradient tolerance mid-chunk": {**BOWL, "stop": {"grad_norm": 1e-3}, "steps": 5000},
    "gradient tolerance mid-chunk, a scheduler moving lr": {
        **BOWL, "stop": {"grad_norm": 1e-2}, "steps": 5000, "scheduler": {"name": "exponential_lr", "gamma": 0.999}},
    "float64, momentum": {**BOWL, "dtype": "float64", "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.9}},
}


def both(spec: dict[str, Any], **kwargs: Any) -> tuple[Any, Any]:
    # chunks end by their row count alone (no time deadline), so both runs have the same chunks
    per_step = run_spec(spec, defer_sync=False, chunking=Chunking(rows=64, seconds=3600), **kwargs)
    deferred = run_spec(spec, defer_sync=True, chunking=Chunking(rows=64, seconds=3600), **kwargs)
    return per_step, deferred


@pytest.mark.parametrize("name", list(CASES))
def test_deferred_reads_give_the_per_step_history_and_result(name: str) -> None:
    (r1, rows1, chunks1), (r2, rows2, chunks2) = both(CASES[name])
    assert rows2 == rows1
    assert (r2.steps, r2.stop_reason, r2.f, r2.x.tolist(), r2.grad_norm) == (r1.steps, r1.stop_reason, r1.f, r1.x.tolist(), r1.grad_norm)
    assert [(c.start, c.end, c.final) for c in chunks2] == [(c.start, c.end, c.final) for c in chunks1]
    assert [c.progress for c in chunks2] == [c.progress for c in chunks1]


def test_a_stop_inside_a_chunk_runs_that_chunk_again(monkeypatch) -> None:
    restored = []
    real = replay.restore
    monkeypatch.setattr(replay, "restore", lambda *a: restored.append(a[0][0]) or real(*a))
    result, _, _ = run_spec(CASES["diverges mid-chunk"], defer_sync=True, chunking=Chunking(rows=64, seconds=3600))
    assert result.stop_reason == StopReason.DIVERGED and len(restored) == 1
    assert restored[0] <= result.steps < restored[0] + 64


def test_no_chunk_runs_again_when_nothing_stops_inside_it(monkeypatch) -> None:
    monkeypatch.setattr(replay, "restore", lambda *a: pytest.fail("a chunk was run again"))
    result, _, _ = run_spec(BOWL, defer_sync=True, chunking=Chunking(rows=64))
    assert result.stop_reason == StopReason.STEPS and result.steps == 300


def test_deferred_reads_resume_from_a_checkpoint_exactly() -> None:
    checked = check_spec(CASES["adam, step lr, every 7th row, x and grad"])
    chunks: list[Any] = []
    boundaries = [0]

    def stop() -> StopReason | None:
        boundaries[0] += 1
        return StopReason.INTERRUPTED if boundaries[0] == 2 else None

    run(checked, on_chunk=chunks.append, should_stop=stop, chunking=Chunking(rows=10, seconds=3600), defer_sync=True)
    resumed = run(checked, on_chunk=chunks.append, resume=chunks[-1].checkpoint, chunking=Chunking(rows=10, seconds=3600),
                  defer_sync=True)
    whole, rows, _ = run_spec(CASES["adam, step lr, every 7th row, x and grad"], defer_sync=False, chunking=Chunking(rows=10))
    assert [r for c in chunks for r in c.rows.as_dicts()] == rows and resumed.x.tolist() == whole.x.tolist()


def test_a_batch_with_deferred_reads_stops_each_lane_where_per_step_checks_do(monkeypatch) -> None:
    """Lanes that diverge, reach the gradient tolerance, are cancelled and run to the end, with a
    scheduler: the same rows, ends and results with deferred reads as with per-step reads."""
    from tests.engine.test_batched import batched

    base = {"objective": "(x ** 2).sum() + 0.5 * x[0] ** 4", "steps": 300, "optimizer": {"name": "sgd", "lr": 0.1},
            "scheduler": {"name": "exponential_lr", "gamma": 0.999}, "stop": {"grad_norm": 1e-3},
            "record": {"every": 3}}
    specs = [{**base, "x0": x0} for x0 in ([1.0, 1.0], [40.0, 1.0], [0.01, 0.0], [0.5, 0.5])]
    runs = []
    for defer in (False, True):
        stops = {3: lambda boundaries: StopReason.CANCELLED if boundaries >= 1 else None}
        runs.append(batched(specs, stops=stops, chunking=Chunking(rows=4, seconds=3600), defer_sync=defer))
    (plain, plain_sink), (deferred, deferred_sink) = runs
    assert [r.stop_reason for r in deferred] == [r.stop_reason for r in plain]
    assert {r.stop_reason for r in plain} == {StopReason.DIVERGED, StopReason.GRAD_NORM, StopReason.CANCELLED}
    assert [(r.steps, r.f, r.x.tolist()) for r in deferred] == [(r.steps, r.f, r.x.tolist()) for r in plain]
    assert deferred_sink.rows == plain_sink.rows
