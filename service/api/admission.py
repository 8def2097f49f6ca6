"""Admitting a submitted job spec: parse, check, and split out its big tensors, ready to store.

A big body (over ``BIG_BODY``: a 10 MB x0 of JSON) costs a few hundred milliseconds of Python
holding the GIL, parsing and checking it value by value; four at once held the API's other
threads (a ``/healthz`` probe's among them) for seconds. Such a body is admitted in a process of
its own (``DESCENT_ADMISSION_PROCESSES``, started on first use), which hands back the spec as it
will be stored, its tensors as bytes: the request thread only waits, without the GIL.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from service.config import Limits
from service.errors import DescentError, ErrorCode
from service.spec import check_spec
from service.spec.batchkey import batch_key
from service.store import data

BIG_BODY = 1 << 20  # bytes of a body (or an upload's parts together) admitted in a process of its own
ADMISSION_SECONDS = 60.0  # a request waits this long for its spec's check, at most


@dataclass(frozen=True)
class Admitted:
    """A checked spec as it will be stored (x0 and data tensors as references) with what storing
    and routing it need."""

    spec: dict[str, Any]
    tensors: dict[str, tuple[list[int], bytes]]  # digest -> (shape, float64 bytes), for ``data.save``
    shape: list[int]
    numel: int
    recorded_values: int
    batch_key: str | None
    device: str

    def tensor_store(self) -> data.Tensors:
        store = data.Tensors()
        store.values.update(self.tensors)
        return store


def admit(spec: Any, limits: Limits) -> Admitted:
    """Check ``spec`` (parsed JSON) and split its tensors out; SpecError if it is refused."""
    checked = check_spec(spec, limits)
    tensors = data.Tensors()
    stored, _ = data.split(checked.as_json(), tensors)
    return Admitted(stored, tensors.values, list(checked.shape), checked.numel, checked.recorded_values,
                    batch_key(checked), checked.spec.device)


def admit_body(raw: bytes, parts: dict[str, bytes] | None, limits: Limits) -> Admitted:
    """``admit`` of a JSON body, or (``parts`` given) of an upload's spec part and .npy parts."""
    from service.api.body import parse_json, upload_spec

    return admit(parse_json(raw) if parts is None else upload_spec(raw, parts, limits.max_elements), limits)


class Admissions:
    """Where big bodies are admitted: a pool of ``processes`` (spawned, so no thread of the API's
    is forked), started on the first big body; none: in the calling thread."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        # big specs admitted at once: one running and one queued a process; past that, 503
        self._slots = threading.BoundedSemaphore(max(1, 2 * processes))

    def admit(self, raw: bytes, parts: dict[str, bytes] | None, limits: Limits) -> Admitted:
        # an uploaded byte may become 8 of float64 (a bool array), so parts count 8 times
        size = len(raw) + 8 * sum(len(p) for p in (parts or {}).values())
        if size <= BIG_BODY or self.processes == 0:
            return admit_body(raw, parts, limits)
        if not self._slots.acquire(blocking=False):
            raise DescentError(f"this API process is already checking {2 * self.processes} big specs; try again "
                               "shortly", code=ErrorCode.SERVICE_BUSY, headers={"Retry-After": "1"})
        try:
            pool = self._started()
            return pool.submit(admit_body, raw, parts, limits).result(timeout=ADMISSION_SECONDS)
        except BrokenProcessPool:  # a process died (out of memory?): a fresh pool for the next body
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise DescentError("the process checking this request's spec stopped; try again",
                               code=ErrorCode.SERVICE_BUSY, headers={"Retry-After": "1"}) from None
        except FutureTimeout:
            raise DescentError(f"checking this spec took over {ADMISSION_SECONDS:g} seconds; try again later",
                               code=ErrorCode.SERVICE_BUSY, headers={"Retry-After": "5"}) from None
        finally:
            self._slots.release()

    def start(self) -> None:
        """Start the processes now, each importing what admission needs (torch), so the first big
        body waits for none of it; returns at once (``descent api`` calls it before serving)."""
        if self.processes:
            pool = self._started()
            for _ in range(self.processes):
                pool.submit(_warm)

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_follow_parent, initargs=(os.getpid(),))
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def _follow_parent(parent: int) -> None:
    """In an admission process: exit once the API process that started it is gone (killed, or
    stopped by a signal that ran no clean-up), rather than linger with torch loaded."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def _warm() -> None:
    """Nothing but the imports an admission process needs (done when this module was imported)."""
