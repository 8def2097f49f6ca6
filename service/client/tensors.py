"""Tensors to and from the API as .npy files: a job's x, grad and x0 as numpy arrays, and arrays to
upload (x0 and data) without JSON."""
from __future__ import annotations

import io
from typing import Any

import numpy as np

NPY = "application/x-npy"


def npy_bytes(values: Any) -> bytes:
    """``values`` (a numpy array, a torch tensor or nested lists of numbers) as a .npy file."""
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    out = io.BytesIO()
    np.save(out, np.asarray(values), allow_pickle=False)
    return out.getvalue()


def from_npy(raw: bytes) -> np.ndarray:
    """A .npy file the API answered, as an array (never unpickling anything)."""
    return np.load(io.BytesIO(raw), allow_pickle=False)
