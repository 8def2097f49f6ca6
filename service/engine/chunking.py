"""Where a run's chunks end, for ``run`` and ``run_batch`` alike."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunking:
    """A chunk ends at the first of ``seconds`` of stepping, ``rows`` recorded rows (of each lane)
    or ``values`` recorded x and grad values (of all lanes together), and carries a checkpoint
    when ``checkpoint_seconds`` have passed since the last one (0: every chunk).

    A chunk boundary is where a run asks its caller whether to stop and where a worker writes
    (one transaction a chunk), so ``seconds`` bounds how late a cancel is seen and how old the
    stored progress is (what a lost lease runs again is what came after the last checkpoint).
    ``rows`` and ``values`` bound memory; ``rows`` is large so that a narrow job recording faster
    than it pays a transaction's fixed cost (lease renewal, commit: about as much as writing 5,000
    rows) seldom, but most jobs end their chunks by time."""

    seconds: float = 0.25
    rows: int = 16_384
    values: int = 4_000_000
    checkpoint_seconds: float = 0.0
