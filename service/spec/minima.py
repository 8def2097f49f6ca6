"""The known minima of a job's catalog objective, for its parameters and, for an objective of
data, its data (solved for once per distinct data and remembered: the lanes of a batch share it)."""
from __future__ import annotations

import hashlib
import threading

from service.spec.catalog import Minimum
from service.spec.start import data_tensors
from service.spec.validate import CheckedSpec

_DATA_MINIMA: dict[tuple[str, tuple[tuple[str, float], ...], str], list[Minimum]] = {}
_REMEMBERED = 64
_LOCK = threading.Lock()


def known_minima(checked: CheckedSpec, numel: int) -> list[Minimum]:
    """The minima of the job's catalog objective at ``numel`` elements; [] for an expression."""
    if checked.catalog is None:
        return []
    params = tuple(sorted(checked.catalog_params.items()))
    if not checked.catalog.data:
        return checked.catalog.known_minima(numel, dict(params))
    data = data_tensors(checked)
    digest = hashlib.sha256()
    for name, tensor in sorted(data.items()):
        digest.update(f"{name}{list(tensor.shape)}".encode() + tensor.numpy().tobytes())
    key = (checked.catalog.name, params, digest.hexdigest())
    with _LOCK:
        found = _DATA_MINIMA.get(key)
    if found is None:
        found = checked.catalog.known_minima(numel, dict(params), data)
        with _LOCK:
            if len(_DATA_MINIMA) >= _REMEMBERED:
                _DATA_MINIMA.pop(next(iter(_DATA_MINIMA)))
            _DATA_MINIMA[key] = found
    return found
