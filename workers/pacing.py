"""Where a running job's chunks end, how often it checkpoints, and learns of a cancel."""
from __future__ import annotations

from service.engine import Chunking

# Where a lone job's chunks end (each one transaction: its rows, lease renewal and cancel flag).
CHUNKING = Chunking()
# A batch's: one transaction for all its lanes' rows, so fewer and longer; a cancelled job of a
# batch stops within about its seconds.
BATCH_CHUNKING = Chunking(seconds=0.5)

# When no chunk was saved for this long (inside a long step of a lone job, or a long chunk of a
# batch), the runner asks the store whether its jobs were cancelled, renewing their leases on the way.
CANCEL_POLL_SECONDS = 1.0


def checkpoint_interval(numel: int, lanes: int = 1) -> float:
    """Seconds between checkpoints: every chunk for small problems (a few hundred bytes each),
    up to every 10 s for a million parameters (megabytes each), and for a batch at least a
    millisecond per lane (each lane's checkpoint is serialised on its own). Rows written after the
    last checkpoint are redone on resume, so a longer interval costs recomputation, never steps."""
    return min(10.0, max(numel * lanes / 100_000, lanes / 1000))
