"""What the API tells of the fleet when it answers about jobs: whether a GPU worker is alive, for
``device: auto`` routing and a gpu job's ``waiting`` reason. (When a worker counts as lost is
``Settings.worker_lost_seconds``.)"""
from __future__ import annotations

import time

from service.api.services import services
from service.store.fleet import live_gpu_worker

_gpu_seen: dict[str, float] = {"checked": -1e9, "alive": 0.0}


def gpu_worker_alive() -> bool:
    """Does a GPU worker heartbeat? (Looked up at most once a second per API process.)"""
    svc = services()
    now = time.monotonic()
    if now - _gpu_seen["checked"] > 1.0:
        _gpu_seen["alive"] = float(live_gpu_worker(svc.db, alive_within=svc.settings.worker_lost_seconds))
        _gpu_seen["checked"] = now
    return bool(_gpu_seen["alive"])
