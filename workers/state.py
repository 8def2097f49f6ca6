"""Per-process worker state: settings, the database, this worker's identity, devices and dispatcher.

Built once by the worker's start-up (``workers.app``'s ``worker_init`` handler, ``start``) in the
process that runs tasks, and read back by the tasks and the fleet threads (``get_state``). A
forked child gets a state of its own (``get_state``), so no pooled connection or CUDA context is
shared across a fork. Imports nothing from ``workers``.
"""
from __future__ import annotations

import os
import platform
import socket
import threading
from dataclasses import dataclass, field

from service.config import Settings
from service.queue import Dispatcher
from service.store import Database


@dataclass
class WorkerState:
    settings: Settings
    db: Database
    worker_id: str
    hostname: str
    queues: list[str]
    device: str
    current_job: str | None = None  # the one running, or the first of the batch running
    current_jobs: list[str] = field(default_factory=list)  # every job this worker holds now
    solo_keys: set[str] = field(default_factory=set)  # batch keys whose objective vmap cannot map
    current_since: float = 0.0
    shutting_down: threading.Event = field(default_factory=threading.Event)
    dispatcher: Dispatcher | None = None  # sends on the process's one Celery app
    device_name: str | None = None  # the CUDA device's name on a GPU worker, the processor's otherwise
    cuda_memory: int | None = None  # the CUDA device's bytes, on a GPU worker
    # Jobs this worker still holds but gave up on in an outage: the heartbeat thread keeps their
    # leases and hands them back (attempts not counted) once the database answers.
    handback: set[str] = field(default_factory=set)
    # Jobs whose stored history was found behind what this worker wrote (``jobs.believing``).
    behind: set[str] = field(default_factory=set)
    # When (time.monotonic()) the heartbeat last failed to reach the database, if ever: for a lease
    # after that, others' leases may have lapsed for the same outage, and this worker reclaims none.
    store_fault_at: float | None = None


_lock = threading.Lock()
_state: WorkerState | None = None


def start(settings: Settings, queues: list[str], dispatcher: Dispatcher | None) -> WorkerState:
    """This process's state, built now and kept for ``get_state``: a worker on ``queues`` (a GPU
    worker when they hold ``gpu``) that sends on ``dispatcher``."""
    global _state
    with _lock:
        _state = _build(settings, queues, dispatcher)
        return _state


def get_state() -> WorkerState:
    """This process's state (``start``); in a forked child, one of its own: the parent's settings and
    queues, with its own identity, database and dispatcher (on the same Celery app)."""
    global _state
    with _lock:
        if _state is None:
            raise RuntimeError("no worker state in this process: the worker's start-up (workers.app) builds it")
        if _state.worker_id != _identity():
            parent = _state.dispatcher
            _state = _build(_state.settings, _state.queues,
                            None if parent is None else Dispatcher(parent.celery, parent.send_wait))
        return _state


def _build(settings: Settings, queues: list[str], dispatcher: Dispatcher | None) -> WorkerState:
    device = "gpu" if "gpu" in queues else "cpu"
    name, memory = _device_facts(device)
    return WorkerState(settings=settings, db=Database(settings.database_url), worker_id=_identity(),
                       hostname=socket.gethostname(), queues=queues, device=device, dispatcher=dispatcher,
                       device_name=name, cuda_memory=memory)


def _device_facts(device: str) -> tuple[str, int | None]:
    """The device's name and (CUDA) memory in bytes, for the workers view."""
    if device == "gpu":
        import torch

        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            return torch.cuda.get_device_name(index), int(torch.cuda.get_device_properties(index).total_memory)
    return platform.processor() or platform.machine() or "cpu", None


def _identity() -> str:
    """host:pid; a forked child gets a new identity, and with it state of its own."""
    return f"{socket.gethostname()}:{os.getpid()}"
