"""What the API tells of the fleet when it answers about jobs: whether a GPU worker is alive (for
``device: auto`` routing and a gpu job's ``waiting`` reason) and when a worker counts as lost."""
from __future__ import annotations

import time

from service.api.services import services
from service.config import Settings
from service.store.fleet import live_gpu_worker

_gpu_seen: dict[str, float] = {"checked": -1e9, "alive": 0.0}


def lost_after_seconds(settings: Settings) -> float:
    """How long a worker may go without a heartbeat before it is shown lost."""
    return settings.worker_lost_after * settings.heartbeat_seconds


def gpu_worker_alive() -> bool:
    """Does a GPU worker heartbeat? (Looked up at most once a second per API process.)"""
    svc = services()
    now = time.monotonic()
    if now - _gpu_seen["checked"] > 1.0:
        _gpu_seen["alive"] = float(live_gpu_worker(svc.db, alive_within=lost_after_seconds(svc.settings)))
        _gpu_seen["checked"] = now
    return bool(_gpu_seen["alive"])
