"""The baseline of make bench's history-writes row: rows in the layout ``history`` had before
revision 0017 (one row per step), as one binary COPY payload built with ``service.store.pgcopy``."""
from __future__ import annotations

import numpy as np

from service.store.pgcopy import FLOAT8_OID, HEADER, TRAILER, array_fields, fill_array

COLUMNS = "job_id, step, f, grad_norm, lr, x, grad"
TABLE = ("(job_id varchar(36) NOT NULL, step integer NOT NULL, f float8 NOT NULL, grad_norm float8 NOT NULL, "
         "lr float8 NOT NULL, x float8[], grad float8[], PRIMARY KEY (job_id, step))")


def encode(job_id: str, steps: np.ndarray, f: np.ndarray, grad_norm: np.ndarray, lr: np.ndarray,
           x: np.ndarray) -> bytes:
    """The COPY ... (``COLUMNS``) FROM STDIN (FORMAT binary) payload of these rows of one job, x
    (rows, numel) recorded and grad not."""
    key = job_id.encode()
    fields: list = [("nfields", ">i2"), ("id_len", ">i4"), ("id", f"S{len(key)}"), ("step_len", ">i4"), ("step", ">i4")]
    for name in ("f", "gn", "lr"):
        fields += [(f"{name}_len", ">i4"), (name, ">f8")]
    fields += array_fields("x", x.shape[1], ">f8") + [("grad_len", ">i4")]
    out = np.zeros(len(steps), dtype=np.dtype(fields))
    out["nfields"] = 7
    out["id_len"], out["id"] = len(key), key
    out["step_len"], out["step"] = 4, steps
    for name, values in (("f", f), ("gn", grad_norm), ("lr", lr)):
        out[f"{name}_len"], out[name] = 8, values
    fill_array(out, "x", FLOAT8_OID, 8, x)
    out["grad_len"] = -1
    return HEADER + out.tobytes() + TRAILER
