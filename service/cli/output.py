"""How the client commands print: JSON answers, an id alone, and plain-text tables."""
from __future__ import annotations

import json
from typing import Any


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_id_or_json(ident: str, value: Any, quiet: bool) -> None:
    if quiet:
        print(ident)
    else:
        print_json(value)


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None or value == "" else (f"{value:.6g}" if isinstance(value, float) else str(value))
    return text if len(text) <= width else text[:width - 1] + "…"


def print_table(columns: list[tuple[str, int]], rows: list[list[Any]]) -> None:
    """Rows under a header; the last column unpadded (and not cut)."""
    widths = [w for _, w in columns]
    print("  ".join(name.ljust(w) for name, w in columns).rstrip())
    for row in rows:
        cells = [_cell(v, w).ljust(w) for v, w in zip(row[:-1], widths)] + [_cell(row[-1], 10_000)]
        print("  ".join(cells).rstrip())
