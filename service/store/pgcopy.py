"""History rows in PostgreSQL's binary COPY format, built column-wise with numpy.

Binary COPY is the cheapest way into PostgreSQL for both sides: no float formatting here and no
float parsing in the server. Every row of a batch has the same size (x and grad have the job's
element count), so a batch is one numpy structured array filled a column at a time.
"""
from __future__ import annotations

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
COLUMNS = "job_id, step, f, grad_norm, lr, x, grad"
FLOAT8_OID = 701


def _array_fields(name: str, numel: int) -> list[tuple[str, str] | tuple[str, str, tuple[int, ...]]]:
    return [(f"{name}_len", ">i4"), (f"{name}_ndim", ">i4"), (f"{name}_nulls", ">i4"), (f"{name}_oid", ">i4"),
            (f"{name}_dim", ">i4"), (f"{name}_lb", ">i4"), (f"{name}_items", [("len", ">i4"), ("v", ">f8")], (numel,))]


def encode(job_id: str, steps: np.ndarray, f: np.ndarray, grad_norm: np.ndarray, lr: np.ndarray,
           x: np.ndarray | None, grad: np.ndarray | None) -> bytes:
    """The COPY ... (FORMAT binary) payload for these rows; x/grad are (rows, numel) or None."""
    key = job_id.encode()
    rows = len(steps)
    fields: list = [("nfields", ">i2"), ("id_len", ">i4"), ("id", f"S{len(key)}"), ("step_len", ">i4"), ("step", ">i4")]
    for name in ("f", "gn", "lr"):
        fields += [(f"{name}_len", ">i4"), (name, ">f8")]
    arrays = {"x": x, "grad": grad}
    for name, values in arrays.items():
        fields += _array_fields(name, values.shape[1]) if values is not None else [(f"{name}_len", ">i4")]
    out = np.zeros(rows, dtype=np.dtype(fields))
    out["nfields"] = 7
    out["id_len"], out["id"] = len(key), key
    out["step_len"], out["step"] = 4, steps
    for name, values in (("f", f), ("gn", grad_norm), ("lr", lr)):
        out[f"{name}_len"], out[name] = 8, values
    for name, values in arrays.items():
        if values is None:
            out[f"{name}_len"] = -1
            continue
        numel = values.shape[1]
        out[f"{name}_len"] = 20 + 12 * numel
        out[f"{name}_ndim"], out[f"{name}_oid"], out[f"{name}_dim"], out[f"{name}_lb"] = 1, FLOAT8_OID, numel, 1
        out[f"{name}_items"]["len"] = 8
        out[f"{name}_items"]["v"] = values
    return HEADER + out.tobytes() + TRAILER
