"""A batched job's history and result equal its solo run, for every optimiser that batches, with
schedulers; lanes stop, diverge, are cancelled and hand back on their own; a lane's checkpoint
resumes alone or in another batch."""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

import service.engine.batched as batched_module

from service.engine import Chunk, Chunking, Lane, LaneEnd, NotBatchable, StopReason, run, run_batch
from service.spec import SpecError, check_spec
from service.spec.batchkey import ELEMENTWISE_OPTIMIZERS, batch_key
from service.spec.validate import lane_checker
from tests.engine.test_optimizers_match import CASES, EXTRA

ROSENBROCK = "100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2"
STARTS = [[-1.2, 1.0], [0.5, -0.3], [2.0, 2.0], [-0.1, 0.7]]
SCHEDULERS = [
    None,
    {"name": "step_lr", "step_size": 7, "gamma": 0.5},
    {"name": "cosine_annealing_lr", "T_max": 40},
    {"name": "one_cycle_lr", "max_lr": 0.01, "total_steps": 41, "cycle_momentum": False},
]


class Collect:
    """A sink keeping every lane's rows, ends and the checkpoints it saw; ``stops`` answers
    ``should_stop`` per lane (a reason, or a callable of how many boundaries have passed)."""

    def __init__(self, n: int, stops: dict[int, Any] | None = None) -> None:
        self.rows: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        self.seen: list[list[Chunk]] = [[] for _ in range(n)]
        self.ends: dict[int, LaneEnd] = {}
        self.stops = stops or {}
        self.boundaries = 0

    def chunks(self, chunks: list[tuple[int, Chunk]]) -> None:
        self.boundaries += 1
        for lane, chunk in chunks:
            self._take(lane, chunk)

    def ended(self, ends: list[LaneEnd]) -> None:
        for end in ends:
            assert end.lane not in self.ends
            self.ends[end.lane] = end
            self._take(end.lane, end.chunk)

    def _take(self, lane: int, chunk: Chunk) -> None:
        self.seen[lane].append(chunk)
        self.rows[lane].extend(chunk.rows.as_dicts())

    def should_stop(self, lane: int) -> StopReason | None:
        stop = self.stops.get(lane)
        return stop(self.boundaries) if callable(stop) else stop


def spec_of(optimizer: dict, x0: list, steps: int = 40, scheduler: dict | None = None, **extra: Any) -> dict:
    return {"objective": ROSENBROCK, "x0": x0, "steps": steps, "optimizer": optimizer, "scheduler": scheduler,
            "record": {"every": 3, "x": True, "grad": True}, **extra}


def solo(spec: dict, **kwargs: Any) -> tuple[Any, list[dict]]:
    chunks: list[Chunk] = []
    result = run(check_spec(spec), on_chunk=chunks.append, **kwargs)
    return result, [row for c in chunks for row in c.rows.as_dicts()]


def batched(specs: list[dict], stops: dict[int, Any] | None = None, **kwargs: Any) -> tuple[list, Collect]:
    lead = check_spec(specs[0])
    lanes = [Lane(lead)] + [Lane(lane_checker(lead)(s)) for s in specs[1:]]
    sink = Collect(len(specs), stops)
    return run_batch(lanes, sink, **kwargs), sink


def assert_same(a: Any, b: Any, rel: float) -> None:
    """Equal within ``rel`` relative (NaN equal to NaN), recursively through lists and dicts."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k], rel)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_same(u, v, rel)
    elif isinstance(a, float):
        assert a == b or (a != a and b != b) or math.isclose(a, b, rel_tol=rel, abs_tol=0.0), (a, b)
    else:
        assert a == b


def assert_lane_is_solo(spec: dict, result: Any, rows: list[dict], rel: float) -> None:
    want_result, want_rows = solo(spec)
    assert [r["step"] for r in rows] == [r["step"] for r in want_rows]
    assert_same(rows, want_rows, rel)
    got, want = result.as_json(), want_result.as_json()
    for volatile in ("seconds",):
        got.pop(volatile), want.pop(volatile)
    assert_same(got, want, rel)


OPTIMIZER_CASES = [(name, kw) for name, kw in CASES.items() if name in ELEMENTWISE_OPTIMIZERS] + \
    [(name, kw) for name, kw in EXTRA if name in ELEMENTWISE_OPTIMIZERS]


def test_every_elementwise_optimizer_is_covered() -> None:
    assert {name for name, _ in OPTIMIZER_CASES} == ELEMENTWISE_OPTIMIZERS


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s["name"] if s else "none")
@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZER_CASES)])
def test_each_lane_equals_its_solo_run(name: str, kwargs: dict, scheduler: dict | None) -> None:
    specs = [spec_of({"name": name, **kwargs}, x0, scheduler=scheduler) for x0 in STARTS]
    results, sink = batched(specs)
    for spec, result, rows in zip(specs, results, sink.rows):
        assert_lane_is_solo(spec, result, rows, rel=1e-6)


def test_float64_lanes_are_their_solo_runs_bit_for_bit_on_an_indexing_objective() -> None:
    specs = [spec_of({"name": "adam", "lr": 0.01}, x0, dtype="float64") for x0 in STARTS]
    results, sink = batched(specs)
    for spec, result, rows in zip(specs, results, sink.rows):
        assert_lane_is_solo(spec, result, rows, rel=0.0)


def test_lanes_stop_diverge_and_are_cancelled_each_on_their_own() -> None:
    """One lane diverges (lr far too big from a far start), one stops on grad_norm early, one is
    cancelled at the first boundary, one runs to the end; each equals its solo run up to its stop."""
    base = {"objective": "(x ** 2).sum() + 0.5 * x[0] ** 4", "steps": 300, "optimizer": {"name": "sgd", "lr": 0.1},
            "stop": {"grad_norm": 1e-3}, "record": {"every": 1}}
    specs = [{**base, "x0": x0} for x0 in ([1.0, 1.0], [40.0, 1.0], [0.01, 0.0], [0.5, 0.5])]
    results, sink = batched(specs, stops={3: StopReason.CANCELLED}, chunking=Chunking(rows=5))
    reasons = [r.stop_reason for r in results]
    assert reasons[1] == StopReason.DIVERGED and reasons[3] == StopReason.CANCELLED
    assert reasons[0] == reasons[2] == StopReason.GRAD_NORM
    assert results[2].steps < results[0].steps  # the one started near the minimum stops first
    for lane in (0, 1, 2):
        assert_lane_is_solo(specs[lane], results[lane], sink.rows[lane], rel=1e-6)
    # cancelled at the first boundary: its rows are the solo run's up to there, and end at its stop
    want = solo(specs[3])[1]
    assert sink.rows[3] == want[:len(sink.rows[3])] or assert_same(sink.rows[3], want[:len(sink.rows[3])], 1e-6)
    assert sink.rows[3][-1]["step"] == results[3].steps == 4
    assert all(chunk.final for chunk in (sink.ends[lane].chunk for lane in range(4)))


def test_a_handed_back_lane_resumes_alone_and_in_a_batch_exactly() -> None:
    specs = [spec_of({"name": "adam", "lr": 0.01}, x0, steps=60) for x0 in STARTS]
    handing_back = {lane: (lambda b: StopReason.INTERRUPTED if b >= 2 else None) for lane in range(4)}
    results, sink = batched(specs, stops=handing_back, chunking=Chunking(rows=4))
    assert {r.stop_reason for r in results} == {StopReason.INTERRUPTED}
    ends = [sink.ends[lane].chunk for lane in range(4)]
    assert all(not c.final and c.checkpoint is not None for c in ends)
    step = ends[0].end
    assert 0 < step < 60 and {c.end for c in ends} == {step}

    # lane 0 alone, from its own checkpoint
    tail: list[Chunk] = []
    run(check_spec(specs[0]), on_chunk=tail.append, resume=ends[0].checkpoint)
    want_result, want_rows = solo(specs[0])
    got_rows = sink.rows[0] + [row for c in tail for row in c.rows.as_dicts()]
    assert_same(got_rows, want_rows, 1e-6)

    # lanes 1..3 together, each from its own checkpoint
    lead = check_spec(specs[1])
    lanes = [Lane(lead, ends[1].checkpoint)] + [Lane(lane_checker(lead)(specs[i]), ends[i].checkpoint) for i in (2, 3)]
    again = Collect(3)
    resumed = run_batch(lanes, again)
    for i, lane in zip((1, 2, 3), range(3)):
        assert_lane_is_solo(specs[i], resumed[lane], sink.rows[i] + again.rows[lane], rel=1e-6)


def test_periodic_checkpoints_of_a_lane_resume_exactly() -> None:
    specs = [spec_of({"name": "rmsprop", "lr": 0.001, "momentum": 0.5}, x0, steps=50,
                     scheduler={"name": "step_lr", "step_size": 7, "gamma": 0.5}) for x0 in STARTS[:2]]
    _, sink = batched(specs, chunking=Chunking(rows=6))
    middle = [c for c in sink.seen[1] if c.checkpoint is not None][2]
    tail: list[Chunk] = []
    run(check_spec(specs[1]), on_chunk=tail.append, resume=middle.checkpoint)
    before = [row for row in sink.rows[1] if row["step"] < middle.end]
    assert_same(before + [row for c in tail for row in c.rows.as_dicts()], solo(specs[1])[1], 1e-6)


def no_batching_rule(fn: Any) -> Any:
    def mapped(x: Any) -> Any:
        raise RuntimeError("no batching rule")
    return mapped


_VMAP = torch.func.vmap


def disagreeing(fn: Any) -> Any:
    return lambda x: _VMAP(fn)(x) * (1 + 1e-3)


@pytest.mark.parametrize("vmap", [no_batching_rule, disagreeing])
def test_an_objective_vmap_cannot_map_exactly_is_refused_before_any_output(monkeypatch, vmap: Any) -> None:
    specs = [{"objective": "(x ** 2).sum()", "x0": x0, "steps": 5} for x0 in ([1.0, 2.0], [3.0, 4.0])]
    lead = check_spec(specs[0])
    sink = Collect(2)
    monkeypatch.setattr(batched_module.torch.func, "vmap", vmap)
    with pytest.raises(NotBatchable, match="no batching rule" if vmap is no_batching_rule else "does not agree"):
        run_batch([Lane(lead), Lane(lane_checker(lead)(specs[1]))], sink)
    assert sink.ends == {} and sink.boundaries == 0


def test_batch_keys_group_only_what_can_share_a_program() -> None:
    base = spec_of({"name": "adam", "lr": 0.01}, STARTS[0])
    key = batch_key(check_spec(base))
    assert key is not None
    assert batch_key(check_spec({**base, "x0": STARTS[1], "name": "other", "tags": {"a": "b"}, "seed": 3})) == key
    for change in ({"steps": 41}, {"optimizer": {"name": "adam", "lr": 0.02}}, {"dtype": "float64"},
                   {"x0": [1.0, 2.0, 3.0]}, {"record": {"every": 2}}, {"stop": {"grad_norm": 1e-3}},
                   {"scheduler": {"name": "step_lr", "step_size": 3}}):
        assert batch_key(check_spec({**base, **change})) != key, change
    assert batch_key(check_spec({**base, "optimizer": {"name": "lbfgs"}})) is None
    assert batch_key(check_spec({**base, "scheduler": {"name": "reduce_lr_on_plateau"}})) is None


def test_a_lane_check_refuses_a_spec_that_differs_in_more_than_its_start() -> None:
    lead = check_spec(spec_of({"name": "adam", "lr": 0.01}, STARTS[0]))
    check = lane_checker(lead)
    with pytest.raises(SpecError, match="more than its start"):
        check(copy.deepcopy(spec_of({"name": "adam", "lr": 0.02}, STARTS[1])))
    with pytest.raises(SpecError, match="shape"):
        check(spec_of({"name": "adam", "lr": 0.01}, [1.0, 2.0, 3.0]))
    with pytest.raises(SpecError):
        check({**spec_of({"name": "adam", "lr": 0.01}, STARTS[1]), "name": 5})
    same = check({**spec_of({"name": "adam", "lr": 0.01}, STARTS[1]), "name": "b", "seed": 7, "tags": {"k": "v"}})
    assert same.spec.name == "b" and same.spec.seed == 7 and same.x0 == STARTS[1]


def test_lanes_of_one_element_stop_each_on_their_own() -> None:
    """An objective may give a one-element tensor (x of shape (1,)): each lane still stops alone."""
    specs = [{"objective": "x ** 4", "x0": [x0], "steps": 200, "optimizer": {"name": "sgd", "lr": 0.1},
              "stop": {"grad_norm": 1e-3}} for x0 in (0.1, 10.0, 0.5)]
    results, sink = batched(specs)
    assert [r.stop_reason for r in results] == [solo(s)[0].stop_reason for s in specs]
    assert results[1].stop_reason == StopReason.DIVERGED
    for spec, result, rows in zip(specs, results, sink.rows):
        assert_lane_is_solo(spec, result, rows, rel=1e-6)


def test_each_lanes_chunks_say_where_that_lane_stands() -> None:
    specs = [spec_of({"name": "adam", "lr": 0.01}, x0) for x0 in ([-1.0, 1.0], [0.5, 0.5], [2.0, -1.0])]
    _, sink = batched(specs, chunking=Chunking(rows=4, seconds=0.0))
    for lane, spec in enumerate(specs):
        _, rows = solo(spec)
        by_step = {r["step"]: r for r in rows}
        standing = [c.progress for c in sink.seen[lane] if not c.final]
        assert standing, "no chunk between the lane's start and its end"
        for stand in standing:
            assert stand.steps == 40
            if stand.step in by_step:  # a recorded step (every 3rd): the same f as the solo run's
                assert stand.f == pytest.approx(by_step[stand.step]["f"], rel=1e-6)
