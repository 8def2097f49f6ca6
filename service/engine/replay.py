"""Deferred reads (the CUDA path): a chunk of steps runs ahead with f and the gradient norms left
on the device, and is run again with per-step checks when one of its steps should have stopped
(a lane, in a batch). A snapshot of where the chunk began makes the second run start from the
same state, so the history and the stop step are exactly those of a per-step run."""
from __future__ import annotations

import copy
from typing import Any

import torch


def snapshot(t: int, x: torch.Tensor, opt: torch.optim.Optimizer, sched: Any) -> tuple[Any, ...]:
    """Where a chunk starts: its step, x, and copies of the optimiser's and the scheduler's state."""
    return (t, x.detach().clone(), copy.deepcopy(opt.state_dict()),
            copy.deepcopy(sched.state_dict()) if sched is not None else None)


def restore(taken: tuple[Any, ...], x: torch.Tensor, opt: torch.optim.Optimizer, sched: Any) -> int:
    """Go back to where a ``snapshot`` was taken; returns its step."""
    t, x_then, opt_then, sched_then = taken
    with torch.no_grad():
        x.copy_(x_then)
    opt.load_state_dict(copy.deepcopy(opt_then))
    if sched is not None:
        sched.load_state_dict(copy.deepcopy(sched_then))
    return t


def stopped_early(evaluated: list[tuple[torch.Tensor, torch.Tensor]], grad_tol: float | None) -> bool:
    """Did a step of the chunk diverge or reach the gradient tolerance? (One read of the device.)"""
    if not evaluated:
        return False
    f = torch.stack([v for v, _ in evaluated])  # (steps,) or, in a batch, (steps, lanes)
    hit = ~torch.isfinite(f)
    if grad_tol is not None:
        hit |= torch.stack([g for _, g in evaluated]) <= grad_tol
    return bool(hit.any())
