"""Which jobs may run together as one batch: those with the same batch key.

A batch steps the x of many jobs stacked on a leading dimension with one real ``torch.optim``
instance, so its jobs must share everything but their start (and name and tags): the objective,
x's shape, dtype and device, the optimiser and every hyper-parameter, the scheduler, steps, stop
and record settings. That is exact only for optimisers that update each element from that
element's own gradient and state (every allowed one but LBFGS, whose line search and history mix
all elements), and for schedulers that do not read f (not ReduceLROnPlateau, which reads each
job's own). Jobs of any other choice get no key and run alone.
"""
from __future__ import annotations

import hashlib
import json

from service.spec.model import PerJob
from service.spec.validate import CheckedSpec

ELEMENTWISE_OPTIMIZERS = frozenset({"sgd", "adam", "adamw", "adamax", "nadam", "radam", "rmsprop", "adagrad",
                                    "adadelta", "asgd", "rprop"})
SCHEDULERS_READING_F = frozenset({"reduce_lr_on_plateau"})
# Part of every key: a change to what batching requires changes it, so old keys never match new ones.
KEY_VERSION = "b1"
# The spec fields jobs of one batch may differ in.
PER_JOB_FIELDS = frozenset(PerJob.model_fields)
# The key hashes the spec as stored (optimiser and scheduler objects as given, names canonical), so
# jobs that give one choice two ways ({"name": "adam"}, {"name": "adam", "lr": 0.001}) run apart,
# never wrongly together.


def batch_key(checked: CheckedSpec) -> str | None:
    """The job's batch key, or None if it must run alone."""
    if checked.optimizer.name not in ELEMENTWISE_OPTIMIZERS:
        return None
    if checked.scheduler is not None and checked.scheduler.name in SCHEDULERS_READING_F:
        return None
    shared = {name: value for name, value in checked.as_json().items() if name not in PER_JOB_FIELDS}
    shared["shape"] = list(checked.shape)
    text = json.dumps(shared, sort_keys=True, default=repr, allow_nan=False)
    return f"{KEY_VERSION}:{hashlib.sha256(text.encode()).hexdigest()}"
