"""The one-line text progress bar that ``wait(progress=True)`` draws on stderr."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from service.client.status import Status


class ProgressBar:
    """A one-line text progress bar, redrawn in place on ``stream`` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream, self.width, self.shown = stream or sys.stderr, width, ""

    def draw(self, done: int | None, total: int | None, note: str) -> None:
        if total:
            share = min(1.0, max(0.0, (done or 0) / total))
            filled = int(share * self.width)
            line = f"[{'#' * filled}{'-' * (self.width - filled)}] {share:4.0%} {done}/{total} {note}"
        else:
            line = f"[{'-' * self.width}] {note}"
        if line != self.shown:
            self._write("\r" + line.ljust(len(self.shown)))
            self.shown = line

    def close(self) -> None:
        if self.shown:
            self._write("\n")
            self.shown = ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: no bar, no failure
            pass


@contextmanager
def bar_if(progress: bool) -> Iterator[ProgressBar | None]:
    """A ProgressBar while the block runs, closed after it (None when ``progress`` is false)."""
    bar = ProgressBar() if progress else None
    try:
        yield bar
    finally:
        if bar:
            bar.close()


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def job_progress(job: dict[str, Any]) -> tuple[int | None, int | None, str]:
    """(steps done, steps in all, a short note) of a job, from its ``progress`` field."""
    status = job.get("status", "?")
    progress = job.get("progress") or {}
    steps = progress.get("steps") or (job.get("spec") or {}).get("steps")
    done = progress.get("step")
    if status == Status.SUCCEEDED and job.get("result"):
        done = job["result"].get("steps", done)
        steps = steps if done is None or steps is None or done <= steps else done
    note = status
    if "f" in progress:
        note += f"  f={_number(progress['f'])}"
    return done, steps, note
