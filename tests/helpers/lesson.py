"""The lesson's specs (DESIGN.md), as tests submit them."""
from __future__ import annotations

LESSON_LOGLOG = {
    "objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w",
    "x0": [[5, 10], [1, 2]], "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001},
}
LESSON_PARABOLA = {
    "objective": "10 * (x ** 2).sum()",
    "x0": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], "steps": 0,
}
