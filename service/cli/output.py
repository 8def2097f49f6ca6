"""How the client commands print: JSON answers, an id alone, and plain-text tables."""
from __future__ import annotations

import json
from typing import Any

from service.client.status import Status, outcome


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


def _number(value: Any, digits: int = 6) -> str:
    """A JSON number of the API (non-finite ones are strings) in a few significant digits."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}g}"


def _flat(value: Any) -> list[Any]:
    return [v for item in value for v in _flat(item)] if isinstance(value, list) else [value]


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _rounded(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:.4f}"


def tensor_line(value: Any, whole: int = 16, first: int = 6) -> str:
    """A tensor in one line: rounded to 4 places when it has at most ``whole`` numbers, else its
    shape and first values; a summary the API sent instead of values as its shape, size and norm."""
    if isinstance(value, dict):  # a big tensor's summary (result.x) or a stored x0's reference
        size = value.get("size")
        facts = [f"shape {value.get('shape')}"] + ([f"{size:,} values"] if isinstance(size, int) else [])
        facts += [f"{k} {_number(value[k])}" for k in ("norm", "min", "max") if k in value]
        return ", ".join(facts)
    if not isinstance(value, list):
        return _rounded(value) if value is not None else "-"
    flat = _flat(value)
    if len(flat) > whole:
        head = ", ".join(_rounded(v) for v in flat[:first])
        return f"shape {_shape(value)}: {head}, … ({len(flat):,} values)"

    def write(v: Any) -> str:
        return f"[{', '.join(write(e) for e in v)}]" if isinstance(v, list) else _rounded(v)

    return write(value)


def job_summary(job: dict[str, Any]) -> list[str]:
    """A job in at most three lines: its id, outcome (a run that stopped on divergence reads
    "diverged", never "succeeded"), steps and final f; its final x; and why it failed, waits or
    where it stands."""
    result, spec = job.get("result") or {}, job.get("spec") or {}
    head = f"{job['id']}  {outcome(job)}"
    if job.get("name"):
        head += f"  {job['name']!r}"
    if result:
        head += f"  stop: {result.get('stop_reason', '-')}  steps: {result.get('steps', '-')}/{spec.get('steps', '-')}"
        head += f"  f: {_number(result.get('f'))}"
    lines = [head]
    if result.get("grad") is not None and (spec.get("steps") == 0 or result.get("x") is None):
        lines.append(f"grad: {tensor_line(result['grad'])}")  # a steps-0 job's answer: the gradient at x0
    elif result.get("x") is not None:
        lines.append(f"x: {tensor_line(result['x'])}")
    progress = job.get("progress")
    if job.get("error"):
        text = " ".join(str(job["error"]).split())
        lines.append(f"error: {text if len(text) <= 300 else text[:299] + '…'}")
    elif job.get("waiting"):
        lines.append(f"waiting: {job['waiting']}")
    elif job["status"] == Status.RUNNING and progress:
        lines.append(f"progress: step {progress.get('step')}/{progress.get('steps')}  f: {_number(progress.get('f'))}")
    return lines[:3]
