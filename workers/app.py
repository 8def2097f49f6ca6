"""The Celery app: ``celery -A workers.app worker -Q cpu`` (or ``descent worker``) runs it.

Workers use the solo pool: each worker process runs one job at a time in its own main thread,
so CUDA is never initialised in a forked parent and SIGTERM reaches the running job. Scale by
starting more worker processes.
"""
from __future__ import annotations

import logging
import os
import sys

from celery import Celery, signals

from service.config import load_settings
from service.queue import celery_config

log = logging.getLogger("workers")

app = Celery("descent")
app.conf.update(celery_config(load_settings()))
app.conf.update(worker_pool="solo", worker_concurrency=1, include=["workers.tasks"])


def _queues_of(sender: object) -> list[str]:
    consumer_queues = getattr(getattr(sender, "app", None), "amqp", None)
    names = os.environ.get("DESCENT_WORKER_QUEUES")
    if names:
        return names.split(",")
    try:
        return sorted(q.name for q in consumer_queues.queues.consume_from.values())  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - fall back to the default queue
        return ["cpu"]


@signals.worker_init.connect
def _refuse_gpu_without_cuda(sender: object = None, **_: object) -> None:
    queues = _queues_of(sender)
    os.environ["DESCENT_WORKER_QUEUES"] = ",".join(queues)
    import torch

    # One job per worker process: one intra-op thread each unless told otherwise.
    torch.set_num_threads(load_settings().torch_threads)
    if "gpu" in queues:
        if not torch.cuda.is_available():
            sys.stderr.write("descent worker: refusing to start on the 'gpu' queue: this machine has no CUDA "
                             "device (torch.cuda.is_available() is False). Run it with --queues cpu instead.\n")
            sys.stderr.flush()
            os._exit(78)  # EX_CONFIG


@signals.worker_ready.connect
def _start_fleet(sender: object = None, **_: object) -> None:
    from workers.fleet import start_background

    start_background(_queues_of(sender))


@signals.worker_shutting_down.connect
def _hand_back(**_: object) -> None:
    from workers.state import get_state

    get_state().shutting_down.set()


@signals.worker_shutdown.connect
def _leave_fleet(**_: object) -> None:
    from workers.fleet import leave

    leave()
