"""Many compatible jobs as one torch program (``service.spec.batchkey`` says which are compatible).

Each job is a *lane*. The lanes' x are stacked on a leading dimension, the compiled objective is
mapped over them with ``torch.func.vmap`` (each lane's indexing and reductions stay its own: ``x[0]``
is that lane's x[0]), and one real ``torch.optim`` instance steps the stack. The optimisers that
batch update each element from its own gradient and state only, so every lane takes the steps of
its solo run (``tests/engine/test_batched.py`` proves it for each). Stops, divergence, cancels and
hand-backs are per lane, as ``loop.run`` decides them for one job: a lane that ends leaves the
stack (its rows are cut out of x, the gradient and the optimiser's state) and the others go on.
Each lane's rows, checkpoints and result are its own, in the solo form: ``loop.run(resume=...)``,
or another batch, continues from a lane's checkpoint.

Before anything is handed out, the first evaluation is checked against the plain objective on
the first lane; if vmap cannot run the objective or disagrees beyond rounding, ``NotBatchable``
is raised and the caller runs the lanes alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from service.rows import HistoryRows, Progress
from service.engine import replay
from service.engine.checkpoint import Checkpoint
from service.engine.chunking import Chunking
from service.engine.device import resolve_device
from service.engine.graph import backward_graph
from service.engine.result import Chunk, Result, StopReason, make_result
from service.engine.start import initial_point, job_data
from service.expr import compile_expression
from service.spec import CheckedSpec

# How far the mapped objective may stray from the plain one on the first lane (relative, per
# dtype) before the batch is refused: rounding in a reduction, nothing more.
AGREEMENT = {torch.float32: 1e-6, torch.float64: 1e-12}


class NotBatchable(Exception):
    """The lanes cannot run as one batch (vmap cannot map the objective, or disagrees with it);
    raised before any chunk or end is handed out, so the caller can run them alone."""


@dataclass(frozen=True)
class Lane:
    """One job of a batch: its checked spec and, when resumed, its checkpoint (every resumed lane
    of a batch is at the same step)."""

    checked: CheckedSpec
    resume: bytes | None = None


@dataclass(frozen=True)
class LaneEnd:
    """A lane that ended: its last chunk (final; or, handed back, the chunk with its checkpoint)
    and its result."""

    lane: int
    chunk: Chunk
    result: Result


class BatchSink(Protocol):
    """Where a batch's output goes; lanes are numbered by their place in ``run_batch``'s list."""

    def chunks(self, chunks: list[tuple[int, Chunk]]) -> None:
        """Every running lane's chunk, at a chunk boundary."""

    def ended(self, ends: list[LaneEnd]) -> None:
        """The lanes that ended on this step."""

    def should_stop(self, lane: int) -> StopReason | None:
        """Asked for each running lane at a chunk boundary, as ``loop.run`` asks its caller."""


@dataclass
class _Rows:
    """The rows recorded since the chunk began, one entry per recorded step, each over the lanes
    in the stack (``mask``: which lanes have the row; None: all)."""

    steps: list[int] = field(default_factory=list)
    f: list[torch.Tensor] = field(default_factory=list)
    grad_norm: list[torch.Tensor] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    x: list[torch.Tensor] = field(default_factory=list)
    grad: list[torch.Tensor] = field(default_factory=list)
    mask: list[torch.Tensor | None] = field(default_factory=list)

    def keep(self, rows: torch.Tensor) -> None:
        """Only the lanes at ``rows`` of the stack stay."""
        for name in ("f", "grad_norm", "x", "grad"):
            setattr(self, name, [v[rows] for v in getattr(self, name)])
        self.mask = [m if m is None else m[rows] for m in self.mask]

    def histories(self, rows: list[int], with_x: bool, with_grad: bool) -> list[HistoryRows]:
        """The recorded rows of each lane at ``rows`` of the stack, each copied off the device once."""
        if not self.steps:
            return [HistoryRows(steps=[], f=[], grad_norm=[], lr=[]) for _ in rows]
        steps, lr = np.asarray(self.steps, dtype=np.int64), np.asarray(self.lr, dtype=np.float64)
        f, gn = _columns(self.f), _columns(self.grad_norm)
        xs = _columns(self.x) if with_x else None
        gs = _columns(self.grad) if with_grad else None
        masks = None
        if any(m is not None for m in self.mask):
            width = f.shape[1]
            masks = np.stack([np.ones(width, dtype=bool) if m is None else m.cpu().numpy() for m in self.mask])
        out = []
        for r in rows:
            sel: Any = slice(None) if masks is None else masks[:, r]
            out.append(HistoryRows(steps=steps[sel], f=f[sel, r], grad_norm=gn[sel, r], lr=lr[sel],
                                   x=xs[sel, r] if xs is not None else None,
                                   grad=gs[sel, r] if gs is not None else None))
        return out


def _columns(values: list[torch.Tensor]) -> np.ndarray:
    """Per-step tensors over the lanes as one float64 array (steps, lanes[, numel])."""
    if not values:
        return np.zeros((0, 0), dtype=np.float64)
    stacked = torch.stack(values).to("cpu", torch.float64)
    return stacked.reshape(stacked.shape[0], stacked.shape[1], -1).numpy() if stacked.dim() > 2 else stacked.numpy()


def run_batch(
    lanes: list[Lane],
    sink: BatchSink,
    *,
    device: str = "cpu",
    chunking: Chunking = Chunking(),
    time_limit: float | None = None,
    defer_sync: bool | None = None,
) -> list[Result]:
    """Run the lanes (one batch key) to their ends; the results in the lanes' order. Arguments
    mean what they mean to ``loop.run``.
    With ``defer_sync`` (default: on CUDA) a chunk runs ahead without reading whether a lane
    diverged or reached the gradient tolerance, and runs again with per-step checks if one did
    (``engine.replay``)."""
    lead = lanes[0].checked
    spec = lead.spec
    dev = resolve_device(device)
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    objective = compile_expression(lead.expression, job_data(lead, dtype, dev))
    mapped = torch.func.vmap(objective)

    resumed = [Checkpoint.from_bytes(lane.resume) for lane in lanes if lane.resume is not None]
    if resumed and (len(resumed) != len(lanes) or len({ck.step for ck in resumed}) != 1):
        raise NotBatchable("a batch resumes all its lanes from checkpoints of one step, or none")
    if resumed:
        x = torch.stack([ck.x.to(device=dev, dtype=dtype) for ck in resumed]).requires_grad_(True)
        t, graph, elapsed = resumed[0].step, resumed[0].graph, [ck.seconds for ck in resumed]
    else:
        x = torch.stack([initial_point(lane.checked, dtype, dev) for lane in lanes]).requires_grad_(True)
        t, graph, elapsed = 0, [], [0.0] * len(lanes)
    opt = lead.optimizer.cls([x], **lead.optimizer.kwargs)
    sched = lead.scheduler.cls(opt, **lead.scheduler.kwargs) if lead.scheduler else None
    if resumed:
        opt.load_state_dict(_stacked_state([ck.optimizer for ck in resumed], lead.shape))
        if sched is not None and resumed[0].scheduler is not None:
            sched.load_state_dict(resumed[0].scheduler)

    n_steps, every = spec.steps, spec.record.every
    rec_x, rec_g = spec.record.x, spec.record.grad
    grad_tol = spec.stop.grad_norm
    max_seconds = spec.stop.max_seconds if spec.stop.max_seconds is not None else time_limit
    per_row = max(1, lead.numel * (int(rec_x) + int(rec_g)))
    active = list(range(len(lanes)))  # the lane at each row of the stack
    results: list[Result | None] = [None] * len(lanes)
    started = time.perf_counter()
    last_checkpoint = started
    checked_once = False
    deferred = dev.type == "cuda" if defer_sync is None else defer_sync
    replaying = False  # the chunk is run again with per-step checks

    def seconds(lane: int) -> float:
        return elapsed[lane] + time.perf_counter() - started

    def checkpoint(row: int, step: int) -> bytes:
        state = _lane_state(opt.state_dict(), row, x.shape)
        lane = active[row]
        return Checkpoint(step, x.detach()[row], state, sched.state_dict() if sched is not None else None,
                          seconds(lane), graph).to_bytes()

    while active:
        chunk_start = t
        speculative, replaying = deferred and not replaying, False
        taken = replay.snapshot(t, x, opt, sched) if speculative else None
        evaluated: list[tuple[torch.Tensor, torch.Tensor]] = []  # (f, grad norm) over the lanes, each step
        rows = _Rows()
        rows_cap = max(1, min(chunking.rows, chunking.values // (per_row * len(active))))
        deadline = time.perf_counter() + chunking.seconds
        while True:
            x.grad = None
            try:
                f = mapped(x).reshape(len(active))  # an objective may give each lane a one-element tensor
                f.sum().backward()
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                if not checked_once:
                    raise NotBatchable(f"vmap cannot run this objective: {exc}") from exc
                raise
            if not checked_once:
                graph = _agreeing_graph(objective, x, f, dtype) or graph
                checked_once = True
            fs = f.detach()
            grads = x.grad
            norms = torch.linalg.vector_norm(grads.reshape(len(active), -1), dim=1)
            stops: dict[int, StopReason] = {}  # row of the stack -> why that lane ends here
            if t >= n_steps:
                stops = dict.fromkeys(range(len(active)), StopReason.STEPS)
            elif speculative:
                evaluated.append((fs, norms))  # read at the chunk's end, with the others
            else:
                diverged = ~torch.isfinite(fs)
                early = diverged if grad_tol is None else diverged | (norms <= grad_tol)
                if bool(early.any()):
                    for row in early.nonzero().flatten().tolist():
                        stops[row] = StopReason.DIVERGED if bool(diverged[row]) else StopReason.GRAD_NORM
            boundary = len(rows.steps) + 1 >= rows_cap or time.perf_counter() >= deadline
            if speculative and (boundary or stops) and replay.stopped_early(evaluated, grad_tol):
                t = replay.restore(taken, x, opt, sched)  # run the chunk again, checking each step
                replaying = True
                break
            if boundary:
                finite_x = torch.isfinite(x.detach().reshape(len(active), -1)).all(dim=1).tolist()
                for row, lane in enumerate(active):
                    if row in stops:
                        continue
                    if not finite_x[row]:
                        stops[row] = StopReason.DIVERGED
                    elif max_seconds is not None and seconds(lane) >= max_seconds:
                        stops[row] = StopReason.TIME_LIMIT
                    else:
                        asked = sink.should_stop(lane)
                        if asked is not None:
                            stops[row] = asked
                if StopReason.INTERRUPTED in stops.values():  # a hand-back is the worker's: every lane's
                    for row in range(len(active)):
                        stops.setdefault(row, StopReason.INTERRUPTED)
            handed_back = [row for row, why in stops.items() if why == StopReason.INTERRUPTED]
            if t % every == 0 or len(stops) > len(handed_back):
                mask = None
                if t % every != 0 or handed_back:
                    mask = torch.zeros(len(active), dtype=torch.bool) if t % every else torch.ones(len(active), dtype=torch.bool)
                    for row, why in stops.items():
                        mask[row] = why != StopReason.INTERRUPTED
                rows.steps.append(t)
                rows.f.append(fs)
                rows.grad_norm.append(norms)
                rows.lr.append(float(opt.param_groups[0]["lr"]))
                rows.mask.append(mask)
                if rec_x:
                    rows.x.append(x.detach().clone())
                if rec_g:
                    rows.grad.append(grads.detach().clone())
            if stops:
                ends = []
                ending = sorted(stops)
                for row, recorded in zip(ending, rows.histories(ending, rec_x, rec_g)):
                    lane, why = active[row], stops[row]
                    if why == StopReason.INTERRUPTED:
                        chunk = Chunk(start=chunk_start, end=t, rows=recorded, checkpoint=checkpoint(row, t), final=False)
                    else:
                        chunk = Chunk(start=chunk_start, end=t, rows=recorded, checkpoint=None, final=True)
                    result = make_result(lanes[lane].checked, x.detach()[row], grads[row], float(fs[row]), t, why,
                                         graph, dev, seconds(lane))
                    results[lane] = result
                    ends.append(LaneEnd(lane, chunk, result))
                sink.ended(ends)
                keep = [row for row in range(len(active)) if row not in stops]
                if not keep:
                    return [r for r in results if r is not None]
                x, opt, sched = _keep_rows(x, opt, sched, keep, lead)
                rows.keep(torch.tensor(keep))
                fs, norms = fs[keep], norms[keep]
                active = [active[row] for row in keep]
            opt.step()
            if sched is not None:
                sched.step()
            t += 1
            if boundary:
                now = time.perf_counter()
                due = now - last_checkpoint >= chunking.checkpoint_seconds
                if due:
                    last_checkpoint = now
                recorded = rows.histories(list(range(len(active))), rec_x, rec_g)
                f_now, norms_now = fs.tolist(), norms.tolist()
                sink.chunks([(lane, Chunk(start=chunk_start, end=t, rows=lane_rows,
                                          checkpoint=checkpoint(row, t) if due else None, final=False,
                                          progress=Progress(t - 1, n_steps, f_now[row], norms_now[row])))
                             for row, (lane, lane_rows) in enumerate(zip(active, recorded))])
                break
    return [r for r in results if r is not None]


def _agreeing_graph(objective: Any, x: torch.Tensor, mapped_f: torch.Tensor, dtype: torch.dtype) -> list[str]:
    """The plain objective on the first lane: NotBatchable unless it agrees with the mapped one
    (f and gradient); its backward graph is the one a solo run reports."""
    first = x.detach()[0].clone().requires_grad_(True)
    f = objective(first)
    f.backward()
    tol = AGREEMENT[dtype]
    agree = (torch.allclose(mapped_f.detach()[0], f.detach(), rtol=tol, atol=0.0, equal_nan=True)
             and torch.allclose(x.grad[0], first.grad, rtol=tol, atol=0.0, equal_nan=True))
    if not agree:
        raise NotBatchable("the mapped objective does not agree with the plain one on the first lane")
    return backward_graph(f)


def _per_element(value: Any, shape: torch.Size | tuple[int, ...]) -> bool:
    """Optimiser state that holds one value per element of x (moments, accumulators, step sizes);
    the rest (the step count, ASGD's eta and mu, NAdam's mu_product) is shared by all lanes."""
    return isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(shape)


def _mapped_state(state: dict[str, Any], shape: torch.Size | tuple[int, ...],
                  fn: Callable[[Any, str, torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """An optimiser state dict with ``fn(param key, name, value)`` in place of each per-element value
    (``shape``: x's); shared state and the param groups as they are."""
    return {"state": {key: {name: fn(key, name, value) if _per_element(value, shape) else value
                            for name, value in param.items()} for key, param in state["state"].items()},
            "param_groups": state["param_groups"]}


def _lane_state(state: dict[str, Any], row: int, stacked: torch.Size) -> dict[str, Any]:
    """The optimiser's state dict as the lane at ``row`` would have it running alone."""
    return _mapped_state(state, stacked, lambda key, name, value: value[row].clone())


def _stacked_state(states: list[dict[str, Any]], shape: tuple[int, ...]) -> dict[str, Any]:
    """Solo optimiser state dicts (one per lane, one step) as the stack's."""
    return _mapped_state(states[0], shape,
                         lambda key, name, value: torch.stack([s["state"][key][name] for s in states]))


def _keep_rows(x: torch.Tensor, opt: torch.optim.Optimizer, sched: Any, keep: list[int],
               lead: CheckedSpec) -> tuple[torch.Tensor, torch.optim.Optimizer, Any]:
    """The stack with only the lanes at ``keep``: x with its gradient, and a fresh optimiser and
    scheduler loaded with the kept rows of their state (as a resumed run loads its checkpoint)."""
    index = torch.tensor(keep, device=x.device)
    kept_state = _mapped_state(opt.state_dict(), x.shape,
                               lambda key, name, value: value.index_select(0, index.to(value.device)))
    grad = x.grad.index_select(0, index)
    kept = x.detach().index_select(0, index).requires_grad_(True)
    kept.grad = grad
    new_opt = lead.optimizer.cls([kept], **lead.optimizer.kwargs)
    sched_state = sched.state_dict() if sched is not None else None
    new_sched = lead.scheduler.cls(new_opt, **lead.scheduler.kwargs) if lead.scheduler else None
    new_opt.load_state_dict(kept_state)
    if new_sched is not None and sched_state is not None:
        new_sched.load_state_dict(sched_state)
    return kept, new_opt, new_sched
