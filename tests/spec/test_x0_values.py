"""x0's numbers are checked in C when they are plain ints and floats well within range, and value
by value otherwise: both ways accept and refuse exactly the same values."""
from __future__ import annotations

import math

import pytest

from service.config import Limits
from service.spec import SpecError
from service.spec.validate import _nested_shape, _plain_numbers_in_range
from service.spec.values import MAX_MAGNITUDE


@pytest.mark.parametrize("value", [0, -3, 2.5, -1e-300, MAX_MAGNITUDE, -MAX_MAGNITUDE, int(MAX_MAGNITUDE)])
def test_numbers_in_range_are_taken(value):
    assert _nested_shape([[1.0, value], [value, 2]], Limits()) == (2, 2)


@pytest.mark.parametrize("value", [True, False, "1.5", None, math.nan, math.inf, -math.inf, 10**400,
                                   int(MAX_MAGNITUDE) * 2, MAX_MAGNITUDE * 1.5, [1.0]])
def test_anything_else_is_refused_naming_x0(value):
    with pytest.raises(SpecError) as refused:
        _nested_shape([1.0, 2.0, value], Limits())
    assert refused.value.field == "x0"


def test_the_fast_check_leaves_every_doubt_to_the_slow_one():
    assert _plain_numbers_in_range([1, 2.5, -7] * 1000)
    for doubtful in (True, math.nan, 10**400, MAX_MAGNITUDE, "1"):
        assert not _plain_numbers_in_range([1.0, doubtful])
