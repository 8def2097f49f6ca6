"""Run a raw spec through the checks and the engine, keeping every history row."""
from __future__ import annotations

from typing import Any

from service.engine import Chunk, Result, run
from service.spec import check_spec


def run_spec(spec: dict[str, Any], **kwargs: Any) -> tuple[Result, list[dict[str, Any]], list[Chunk]]:
    chunks: list[Chunk] = []
    result = run(check_spec(spec), on_chunk=chunks.append, **kwargs)
    rows = [row for chunk in chunks for row in chunk.rows.as_dicts()]
    return result, rows, chunks
