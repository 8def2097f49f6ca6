"""The descent loop: the real ``torch.optim`` optimiser on a compiled objective, nothing more.

Row ``t`` of the history is x_t, f(x_t), ||grad f(x_t)||, the learning rate used to leave x_t
and, if asked, grad f(x_t); N steps give rows 0..N. Rows leave in chunks through ``on_chunk``
(bounded memory, and a caller can persist as it goes); between chunks the loop asks
``should_stop`` whether to end (``StopReason.CANCELLED``) or hand back
(``StopReason.INTERRUPTED``), checks the time limit, and (when one is due) writes a checkpoint
from which ``run(..., resume=...)`` continues bit for bit.

A step can be long: LBFGS calls its closure up to ``max_iter`` times per step. Between those
evaluations the loop checks the time limit, and asks ``should_stop`` once at least
``STOP_CHECK_SECONDS`` have passed since it last asked. A cancel (or any ending reason) or the
time limit *aborts* the step: x and its gradient go back to x_t (copied before the step), row t
is the last row and the result is x_t, f(x_t) after t steps, as if the stop had come just before
the step. A hand-back (``INTERRUPTED``) does not abort the step: the optimiser's state is
partially updated mid-step, so the step is finished and the run hands back right after it, with
a checkpoint at step t + 1 as between any two chunks.
"""
from __future__ import annotations

import math
import time
from typing import Callable

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

ChunkSink = Callable[[Chunk], None]
StopCheck = Callable[[], "StopReason | None"]

# Inside a step (between the closure evaluations of LBFGS), ``should_stop`` is asked at most once
# per this many seconds: the caller's check may be a database round trip.
STOP_CHECK_SECONDS = 0.5


class _StepAborted(Exception):
    """Raised from LBFGS's closure to leave ``opt.step`` when the run must end mid-step."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason)
        self.reason = reason


def _no_stop() -> StopReason | None:
    return None


def _discard(chunk: Chunk) -> None:
    return None


def run(
    checked: CheckedSpec,
    *,
    device: str = "cpu",
    on_chunk: ChunkSink = _discard,
    should_stop: StopCheck = _no_stop,
    resume: bytes | None = None,
    chunking: Chunking = Chunking(),
    time_limit: float | None = None,
    defer_sync: bool | None = None,
) -> Result:
    """Run the checked spec to its end, or until a stop; return the result.

    ``time_limit`` applies when the spec sets no ``stop.max_seconds`` (a service-wide ceiling).
    ``chunking`` says where chunks end and which carry a checkpoint; an interrupted run's last
    chunk always does.

    ``defer_sync`` (default: on CUDA) keeps f and the gradient norms on the device through a
    chunk instead of reading them every step (each read waits for the GPU): the chunk's steps
    run ahead, and at its end one read checks every step for divergence and the gradient
    tolerance. If one of them stopped the run, the chunk is run again from its start with
    per-step checks, so the history and the stop step are exactly those of a per-step run. LBFGS
    (whose closure reads f) and ReduceLROnPlateau (which steps on f) always check per step."""
    spec = checked.spec
    dev = resolve_device(device)
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    objective = compile_expression(checked.expression, job_data(checked, dtype, dev))

    if resume is not None:
        ck = Checkpoint.from_bytes(resume)
        x = ck.x.to(device=dev, dtype=dtype).clone().requires_grad_(True)
        t, elapsed_before, graph = ck.step, ck.seconds, ck.graph
    else:
        x = initial_point(checked, dtype, dev).requires_grad_(True)
        t, elapsed_before, graph = 0, 0.0, []
    opt = checked.optimizer.cls([x], **checked.optimizer.kwargs)
    sched = checked.scheduler.cls(opt, **checked.scheduler.kwargs) if checked.scheduler else None
    if resume is not None:
        opt.load_state_dict(ck.optimizer)
        if sched is not None and ck.scheduler is not None:
            sched.load_state_dict(ck.scheduler)

    n_steps, every = spec.steps, spec.record.every
    rec_x, rec_g = spec.record.x, spec.record.grad
    grad_tol = spec.stop.grad_norm
    max_seconds = spec.stop.max_seconds if spec.stop.max_seconds is not None else time_limit
    use_closure = isinstance(opt, torch.optim.LBFGS)
    plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    deferred = (dev.type == "cuda" if defer_sync is None else defer_sync) and not use_closure and not plateau
    replaying = False  # the chunk is run again with per-step checks
    per_row = max(1, x.numel() * (int(rec_x) + int(rec_g)))
    rows_cap = max(1, min(chunking.rows, chunking.values // per_row))
    norm = torch.linalg.vector_norm
    x_view = x.detach()  # shares x's storage: the optimiser's in-place updates show through
    started = time.perf_counter()

    def seconds() -> float:
        return elapsed_before + time.perf_counter() - started

    last_checkpoint = [time.perf_counter()]
    last_asked = [time.perf_counter()]
    interrupt_pending = [False]  # a hand-back asked for mid-step, taken at the step's end

    def asked() -> StopReason | None:
        """The caller's stop check, between steps."""
        last_asked[0] = time.perf_counter()
        reason = should_stop()
        if reason is None and interrupt_pending[0]:
            reason = StopReason.INTERRUPTED
        return reason

    def check_mid_step() -> None:
        """Between two evaluations of one step: raise _StepAborted to end the run now."""
        if max_seconds is not None and seconds() >= max_seconds:
            raise _StepAborted(StopReason.TIME_LIMIT)
        now = time.perf_counter()
        if now - last_asked[0] < STOP_CHECK_SECONDS:
            return
        last_asked[0] = now
        reason = should_stop()
        if reason == StopReason.INTERRUPTED:
            interrupt_pending[0] = True  # finish the step: its optimiser state is half-updated
        elif reason is not None:
            raise _StepAborted(reason)

    def checkpoint(step: int, force: bool = False) -> bytes | None:
        now = time.perf_counter()
        if not force and now - last_checkpoint[0] < chunking.checkpoint_seconds:
            return None
        last_checkpoint[0] = now
        return Checkpoint(step, x.detach(), opt.state_dict(),
                          sched.state_dict() if sched is not None else None, seconds(), graph).to_bytes()

    while True:
        chunk_start = t
        speculative, replaying = deferred and not replaying, False
        snapshot = replay.snapshot(t, x, opt, sched) if speculative else None
        evaluated: list[tuple[torch.Tensor, torch.Tensor]] = []  # (f, grad norm) of each step, on the device
        steps: list[int] = []
        fs: list[float | torch.Tensor] = []
        lrs: list[float] = []
        gns: list[torch.Tensor] = []
        xs: list[torch.Tensor] = []
        gs: list[torch.Tensor] = []
        deadline = time.perf_counter() + chunking.seconds

        def flush(end: int, ck: bytes | None, final: bool = False, evaluated: int | None = None) -> None:
            """Hand out the chunk; ``evaluated``: the last step whose f was computed (``end``
            unless the run stepped past it)."""
            rows = HistoryRows(steps=steps, f=fs if not speculative else _stacked(fs), grad_norm=_stacked(gns), lr=lrs,
                                x=_stacked(xs) if rec_x and xs else None, grad=_stacked(gs) if rec_g and gs else None)
            at = end if evaluated is None else evaluated
            last_gn = gns[-1] if steps and steps[-1] == at else (gn if gn is not None else norm(x.grad))
            progress = Progress(step=at, steps=n_steps, f=f_value, grad_norm=float(last_gn))
            on_chunk(Chunk(start=chunk_start, end=end, rows=rows, checkpoint=ck, final=final, progress=progress))

        def record(fv: float | torch.Tensor, gn: torch.Tensor | None) -> None:
            steps.append(t)
            fs.append(fv)
            lrs.append(float(opt.param_groups[0]["lr"]))  # read each time: a replay's load_state_dict replaces the group
            gns.append(gn if gn is not None else norm(x.grad))
            if rec_x:
                xs.append(x_view.clone())
            if rec_g:
                gs.append(x.grad.clone())

        while True:
            x.grad = None
            f = objective(x)
            f.backward()
            if not graph:
                graph = backward_graph(f)
            stop = None
            if speculative:
                fv, gn = f.detach(), norm(x.grad)  # read at the chunk's end, with the others
                if t < n_steps:
                    evaluated.append((fv, gn))
                else:
                    stop = StopReason.STEPS
            else:
                fv = f.item()
                gn = norm(x.grad) if grad_tol is not None else None
                if t >= n_steps:
                    stop = StopReason.STEPS
                elif not math.isfinite(fv):
                    stop = StopReason.DIVERGED
                elif gn is not None and gn.item() <= grad_tol:
                    stop = StopReason.GRAD_NORM
            boundary = interrupt_pending[0] or len(steps) + 1 >= rows_cap or time.perf_counter() >= deadline
            f_value = fv if not speculative else None  # read at the chunk's end
            if speculative and (boundary or stop is not None):
                if replay.stopped_early(evaluated, grad_tol):  # run the chunk again, checking each step
                    t = replay.restore(snapshot, x, opt, sched)
                    replaying = True
                    break
                f_value = float(fv)
            if boundary and stop is None:
                if not bool(torch.isfinite(x).all()):
                    stop = StopReason.DIVERGED
                elif max_seconds is not None and seconds() >= max_seconds:
                    stop = StopReason.TIME_LIMIT
                else:
                    stop = asked()
                    if stop == StopReason.INTERRUPTED:
                        flush(t, checkpoint(t, force=True))
                        return make_result(checked, x.detach(), x.grad, f_value, t, stop, graph, dev, seconds())
            recorded = stop is not None or t % every == 0
            if recorded:
                record(fv, gn)
            if stop is not None:
                flush(t, None, final=True)
                return make_result(checked, x.detach(), x.grad, f_value, t, stop, graph, dev, seconds())
            if use_closure:
                # x_t and its gradient, to go back to if the run ends inside this step
                x_t, grad_t = x.detach().clone(), x.grad.detach().clone()
                try:
                    opt.step(_closure(objective, x, f, check_mid_step))
                except _StepAborted as aborted:
                    with torch.no_grad():
                        x.copy_(x_t)
                    x.grad = grad_t
                    if not recorded:
                        record(fv, gn)
                    flush(t, None, final=True)
                    return make_result(checked, x.detach(), x.grad, f_value, t, aborted.reason, graph, dev, seconds())
                del x_t, grad_t
            else:
                opt.step()
            if sched is not None:
                if plateau:
                    sched.step(fv)
                else:
                    sched.step()
            t += 1
            if boundary:
                flush(t, checkpoint(t), evaluated=t - 1)
                break


def _stacked(tensors: list[torch.Tensor]) -> np.ndarray:
    """Tensors kept on the device while stepping (gradient norms, recorded x or grad) as one
    float64 array, copied off the device once; ``HistoryRows`` gives it its row shape."""
    if not tensors:
        return np.zeros(0, dtype=np.float64)
    return torch.stack(tensors).to("cpu", torch.float64).numpy()


def _closure(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, f_now: torch.Tensor,
             check: Callable[[], None]) -> Callable[[], torch.Tensor]:
    """LBFGS's closure; its first call reuses the evaluation (and gradient) already made at x_t,
    and every later one first runs ``check`` (which may raise _StepAborted)."""
    first = [True]

    def closure() -> torch.Tensor:
        if first[0]:
            first[0] = False
            return f_now
        check()
        x.grad = None
        loss = objective(x)
        loss.backward()
        return loss

    return closure
