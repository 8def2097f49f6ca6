"""Which torch device a job runs on in this worker."""
from __future__ import annotations

from typing import Any

import torch

NO_GPU = "this job needs a GPU, but the worker that took it has no CUDA device"


def job_device(job: Any, gpu_on_cpu: bool = False) -> str | None:
    """The torch device for a job of ``job``'s queue on this worker; None if it has none (a
    test worker told to serve the gpu queue without CUDA runs it on the CPU)."""
    if job.queue == "gpu":
        return "cuda" if torch.cuda.is_available() else ("cpu" if gpu_on_cpu else None)
    return "cpu"
