"""Fixtures shared by every test: one-line spec checking and running."""
from __future__ import annotations

import warnings
from typing import Any

import pytest

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

LESSON_LOGLOG = {
    "objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w",
    "x0": [[5, 10], [1, 2]], "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001},
}
LESSON_PARABOLA = {
    "objective": "10 * (x ** 2).sum()",
    "x0": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], "steps": 0,
}


@pytest.fixture
def lesson_loglog() -> dict[str, Any]:
    return dict(LESSON_LOGLOG)


@pytest.fixture
def lesson_parabola() -> dict[str, Any]:
    return dict(LESSON_PARABOLA)
