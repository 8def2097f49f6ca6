"""How many requests one API process lets wait (``?wait``), stream (history, events) or compute a
grid (surface, plot) at once.

Each such request holds a request thread for as long as it waits or streams, so the API runs
``DESCENT_MAX_WAITERS`` threads for them on top of ``DESCENT_API_THREADS`` for everything else,
and this counter keeps them to their share: past it, a ``?wait`` answers at once with the job as
it is (and ``Retry-After``), and a new stream is a 503 with ``Retry-After``. So they never take
the threads of ordinary requests, health checks among them.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from service.errors import DescentError, ErrorCode

RETRY_AFTER_SECONDS = 2


class WaiterSlots:
    """A counter of the requests waiting or streaming in this process, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        """Slots taken now (``/healthz`` reports it)."""
        return self._in_use

    def take(self) -> bool:
        """A slot if one is free (never blocks)."""
        with self._lock:
            if self._in_use >= self.limit:
                return False
            self._in_use += 1
            return True

    def give_back(self) -> None:
        """Return a slot ``take`` gave."""
        with self._lock:
            self._in_use = max(0, self._in_use - 1)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A slot for the time of a long answer (a surface's grid, a plot), or the 503 of
        ``take_for_stream``: such answers take the waiting threads, never the ordinary ones."""
        self.take_for_stream()
        try:
            yield
        finally:
            self.give_back()

    def take_for_stream(self) -> None:
        """A slot for a stream, or the 503 that tells the client to come back."""
        if not self.take():
            raise DescentError(f"this API process is already serving {self.limit} waiting or streaming requests "
                               "(DESCENT_MAX_WAITERS); try again shortly", code=ErrorCode.SERVICE_BUSY,
                               headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class GridBudget:
    """Bytes that the grids being evaluated in this process (``/surface``, ``plot.png``) may hold
    at once: each request reserves its estimate before any evaluation, waits briefly for room,
    and is otherwise a 503 with ``Retry-After``, so concurrent grids of a heavy objective take
    turns instead of multiplying the API's memory. One estimate over the whole budget runs alone."""

    def __init__(self, total: int, wait_seconds: float = 5.0) -> None:
        self.total = total
        self.wait_seconds = wait_seconds
        self._used = 0
        self._room = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextmanager
    def held(self, cost: int) -> Iterator[None]:
        cost = max(1, min(cost, self.total))
        with self._room:
            if not self._room.wait_for(lambda: self._used + cost <= self.total, timeout=self.wait_seconds):
                raise DescentError(f"this API process is evaluating other grids that hold its memory for grids "
                                   f"({self.total:,} bytes, from DESCENT_MAX_OBJECTIVE_BYTES); try again shortly",
                                   code=ErrorCode.SERVICE_BUSY, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            self._used += cost
        try:
            yield
        finally:
            with self._room:
                self._used -= cost
                self._room.notify_all()
