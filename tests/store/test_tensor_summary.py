"""What a job document says of a big tensor (``service.store.tensors.summary``), without a database:
its numbers are the array's, non-finite ones said as strings, and the norm of finite values near
the float64 limit is finite."""
from __future__ import annotations

import math

import numpy as np

from service.store import data, tensors


def test_the_summary_is_the_arrays_numbers():
    a = np.arange(12.0).reshape(3, 4) - 5
    got = tensors.summary(a)
    assert got == {"shape": [3, 4], "dtype": "float64", "size": 12, "sha256": data.tensor_digest([3, 4], a.tobytes()),
                   "norm": math.sqrt(float((a ** 2).sum())), "min": -5.0, "max": 6.0}


def test_huge_finite_values_have_a_finite_norm_and_nan_is_said():
    huge = np.array([-6.7e215, 7e217, 1.0])
    assert math.isclose(tensors.summary(huge)["norm"], math.hypot(-6.7e215, 7e217, 1.0), rel_tol=1e-12)
    assert tensors.summary(np.array([1.0, math.nan]))["norm"] == "NaN"
    assert tensors.summary(np.array([1.0, math.inf]))["max"] == "Infinity"
