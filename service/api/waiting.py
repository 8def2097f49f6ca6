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
