"""History semantics, stops, chunking and checkpoint/resume of the descent loop."""
from __future__ import annotations

import pytest
import torch

from service.engine import Chunking, EngineError, cuda_available, run
from service.spec import check_spec
from tests.helpers.engine import run_spec
from service.engine import StopReason

BOWL = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 100, "optimizer": {"name": "sgd", "lr": 0.001}}


def test_record_every_keeps_multiples_and_the_last():
    _, rows, _ = run_spec({**BOWL, "steps": 23, "record": {"every": 5}})
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 20, 23]


def test_record_flags_choose_columns():
    _, rows, _ = run_spec({**BOWL, "steps": 3, "record": {"x": False, "grad": True}})
    assert "x" not in rows[0] and rows[0]["grad"] == [160.0, 160.0]
    assert rows[0]["grad_norm"] == pytest.approx((2 * 160.0 ** 2) ** 0.5)


def test_grad_norm_stop_ends_at_first_small_gradient():
    result, rows, _ = run_spec({**BOWL, "steps": 100_000, "optimizer": {"name": "sgd", "lr": 0.01},
                                "stop": {"grad_norm": 1e-3}, "record": {"every": 1000}})
    assert result.stop_reason == "grad_norm"
    assert result.grad_norm <= 1e-3 and rows[-1]["step"] == result.steps
    assert rows[-2]["grad_norm"] > 1e-3


def test_divergence_stops_and_keeps_rows():
    result, rows, _ = run_spec({**BOWL, "steps": 10_000, "optimizer": {"name": "sgd", "lr": 1.0}})
    assert result.stop_reason == "diverged"
    assert rows[-1]["step"] == result.steps < 10_000
    assert not torch.isfinite(torch.tensor(rows[-1]["f"]))
    assert all(torch.isfinite(torch.tensor(r["f"])) for r in rows[:-1])


def test_time_limit_stop():
    result, rows, _ = run_spec({**BOWL, "steps": 10_000_000 // 10, "stop": {"max_seconds": 0.3},
                                "record": {"every": 1000}}, chunking=Chunking(seconds=0.05))
    assert result.stop_reason == "time_limit"
    assert 0 < result.steps < 1_000_000 and rows[-1]["step"] == result.steps


def test_should_stop_cancels_between_chunks():
    calls = []

    def stop() -> str | None:
        calls.append(1)
        return StopReason.CANCELLED if len(calls) >= 2 else None

    result, rows, chunks = run_spec({**BOWL, "steps": 1000}, chunking=Chunking(rows=100, seconds=60), should_stop=stop)
    assert result.stop_reason == StopReason.CANCELLED
    # the second chunk boundary is at step 199: that point is evaluated, recorded and kept
    assert result.steps == 199 and rows[-1]["step"] == 199 and len(rows) == 200
    assert chunks[-1].final and all(c.checkpoint for c in chunks[:-1])


def test_chunks_tile_the_history_without_overlap():
    _, rows, chunks = run_spec({**BOWL, "steps": 1000, "record": {"every": 7}}, chunking=Chunking(rows=10))
    assert len(chunks) > 5
    for a, b in zip(chunks, chunks[1:]):
        assert a.end == b.start
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 1000


RESUMABLE = [
    {"name": "sgd", "lr": 1e-4, "momentum": 0.9},
    {"name": "adam", "lr": 0.01},
    {"name": "rmsprop", "lr": 0.001},
    {"name": "asgd", "lr": 1e-4},
    {"name": "lbfgs", "lr": 0.5, "max_iter": 4},
]


@pytest.mark.parametrize("optimizer", RESUMABLE, ids=[o["name"] for o in RESUMABLE])
@pytest.mark.parametrize("scheduler", [None, {"name": "step_lr", "step_size": 7, "gamma": 0.5},
                                       {"name": "reduce_lr_on_plateau", "patience": 2}],
                         ids=["nosched", "steplr", "plateau"])
@pytest.mark.slow
def test_interrupt_and_resume_is_bit_identical(optimizer, scheduler):
    spec = {"objective": {"name": "rosenbrock"}, "steps": 90, "optimizer": optimizer, "scheduler": scheduler,
            "record": {"grad": True}}
    full, full_rows, _ = run_spec(spec)
    checked = check_spec(spec)
    chunks, rounds, resume = [], 0, None
    while True:
        asked = [0]

        def stop() -> str | None:
            asked[0] += 1
            return "interrupted" if asked[0] == 2 else None

        result = run(checked, on_chunk=chunks.append, should_stop=stop, resume=resume, chunking=Chunking(rows=10))
        rounds += 1
        if result.stop_reason != "interrupted":
            break
        resume = chunks[-1].checkpoint
    rows = [r for c in chunks for r in c.rows.as_dicts()]
    assert rounds > 3
    assert rows == full_rows
    assert result.x.tolist() == full.x.tolist() and result.f == full.f and result.steps == full.steps


def test_scheduler_lr_is_the_rate_used_from_each_point():
    _, rows, _ = run_spec({**BOWL, "steps": 6, "scheduler": {"name": "step_lr", "step_size": 2, "gamma": 0.1}})
    assert [r["lr"] for r in rows[:6]] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_random_start_is_seeded():
    spec = {**BOWL, "steps": 3, "x0": {"shape": [3, 2], "init": "uniform", "low": -2, "high": 2, "seed": 7}}
    a, _, _ = run_spec(spec)
    b, _, _ = run_spec(spec)
    c, _, _ = run_spec({**spec, "x0": {**spec["x0"], "seed": 8}})
    assert a.x.tolist() == b.x.tolist() and a.x.tolist() != c.x.tolist()
    unseeded = {**spec, "x0": {k: v for k, v in spec["x0"].items() if k != "seed"}}
    d, _, _ = run_spec({**unseeded, "seed": 7})
    assert d.x.tolist() == a.x.tolist()  # the job's seed seeds a start that sets none


def test_catalog_result_reports_distance_to_nearest_minimum():
    result, _, _ = run_spec({"objective": {"name": "himmelblau"}, "x0": [3.5, -1.5], "steps": 2000,
                             "optimizer": {"name": "adam", "lr": 0.01}, "dtype": "float64",
                             "record": {"every": 100}})
    assert result.distance_to_minimum < 1e-3


@pytest.mark.skipif(cuda_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_without_cuda_is_a_clear_error():
    with pytest.raises(EngineError, match="no CUDA device"):
        run(check_spec(BOWL), device="gpu")


def test_streaming_keeps_chunks_bounded():
    sizes = []
    run(check_spec({**BOWL, "x0": {"shape": [1000], "init": "normal"}, "steps": 2000}),
        on_chunk=lambda c: sizes.append(c.rows.x.size), chunking=Chunking(values=50_000))
    assert len(sizes) >= 40 and max(sizes) <= 50_000


def test_checkpoints_can_be_spaced_out_and_interrupts_always_carry_one():
    spec = check_spec({**BOWL, "steps": 3000})
    chunks = []
    asked = [0]

    def stop() -> str | None:
        asked[0] += 1
        return "interrupted" if asked[0] == 6 else None

    run(spec, on_chunk=chunks.append, should_stop=stop, chunking=Chunking(rows=100, seconds=60, checkpoint_seconds=3600))
    assert [c.checkpoint is not None for c in chunks] == [False] * 5 + [True]
    assert not any(c.final for c in chunks)


def test_each_chunk_says_where_the_run_stands_even_between_recorded_steps():
    spec = {**BOWL, "steps": 100, "record": {"every": 1000}}  # only the last row is recorded
    _, every_row, _ = run_spec({**BOWL, "steps": 100})
    by_step = {r["step"]: r for r in every_row}
    result, _, chunks = run_spec(spec, chunking=Chunking(rows=1, seconds=0.0))
    assert len(chunks) > 10
    for chunk in chunks:
        stand = chunk.progress
        assert stand.steps == 100 and stand.step == (chunk.end if chunk.final else chunk.end - 1)
        assert stand.f == by_step[stand.step]["f"] and stand.grad_norm == by_step[stand.step]["grad_norm"]
    assert chunks[-1].progress.step == result.steps == 100
