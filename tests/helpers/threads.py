"""One call made from many threads at once, for the tests of what the store keeps exact under races."""
from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def at_once(call: Callable[[], T], threads: int, refused: type[E], timeout: float | None = None) -> list[T | E]:
    """What ``call`` returned in each of ``threads`` threads started together, or the ``refused`` it raised."""
    answers: list[T | E] = []

    def one() -> None:
        try:
            answers.append(call())
        except refused as error:
            answers.append(error)

    started = [threading.Thread(target=one) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join(timeout)
    return answers
