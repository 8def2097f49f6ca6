"""History in PostgreSQL's binary COPY format (chunks of steps as arrays), built column-wise with
numpy.

Binary COPY is the cheapest way into PostgreSQL for both sides: no float formatting here and no
float parsing in the server. Chunks of one kind (id length, rows, x and grad widths) have one
size, so they are one numpy structured array filled a column at a time.
"""
from __future__ import annotations

import json
import re

from typing import Sequence

import numpy as np

from service.rows import HistoryRows

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
FLOAT8_OID = 701
INT4_OID = 23
CHUNK_FIELDS = 11  # job_id, first_step, last_step, n_rows, width, steps, f, grad_norm, lr, x, grad


def encode_chunks(items: Sequence[tuple[str, HistoryRows]]) -> bytes:
    """The COPY history_chunks (``chunks.COLUMNS``) FROM STDIN (FORMAT binary) payload of these
    chunks (each of one job, at least one row): one structured array for each kind of chunk (id
    length, rows and widths), which for a batch's lanes is nearly always one or two."""
    groups: dict[tuple[int, int, int, int], list[tuple[bytes, HistoryRows]]] = {}
    for job_id, rows in items:
        key = job_id.encode()
        groups.setdefault((len(key), len(rows), _width(rows.x), _width(rows.grad)), []).append((key, rows))
    return HEADER + b"".join(_chunk_tuples(kind, members) for kind, members in groups.items()) + TRAILER


def _width(values: np.ndarray | None) -> int:
    return -1 if values is None else values.shape[1]


def array_fields(name: str, count: int, item: str) -> list:
    """The structured-array fields of a one-dimensional array column ``name`` of ``count`` items of
    numpy type ``item`` (its length, header and items, each item with its length)."""
    fields: list = [(f"{name}_len", ">i4"), (f"{name}_ndim", ">i4"), (f"{name}_nulls", ">i4"), (f"{name}_oid", ">i4")]
    if count:
        fields += [(f"{name}_dim", ">i4"), (f"{name}_lb", ">i4"), (f"{name}_items", [("len", ">i4"), ("v", item)], (count,))]
    return fields


def fill_array(out: np.ndarray, name: str, oid: int, size: int, values: np.ndarray) -> None:
    """Fill the array field ``name`` of every tuple with ``values`` ((tuples, count) of them)."""
    count = values.shape[1]
    out[f"{name}_len"] = 12 + (8 + (4 + size) * count if count else 0)
    out[f"{name}_ndim"], out[f"{name}_oid"] = (1 if count else 0), oid
    if count:
        out[f"{name}_dim"], out[f"{name}_lb"] = count, 1
        out[f"{name}_items"]["len"] = size
        out[f"{name}_items"]["v"] = values


def _chunk_tuples(kind: tuple[int, int, int, int], members: list[tuple[bytes, HistoryRows]]) -> bytes:
    key_len, rows, x_width, grad_width = kind
    fields: list = [("nfields", ">i2"), ("id_len", ">i4"), ("id", f"S{key_len}")]
    for name in ("first", "last", "n", "width"):
        fields += [(f"{name}_len", ">i4"), (name, ">i4")]
    fields += array_fields("steps", rows, ">i4")
    for name in ("f", "gn", "lr"):
        fields += array_fields(name, rows, ">f8")
    for name, width in (("x", x_width), ("grad", grad_width)):
        fields += array_fields(name, rows * width, ">f8") if width >= 0 else [(f"{name}_len", ">i4")]
    out = np.zeros(len(members), dtype=np.dtype(fields))
    chunks = [r for _, r in members]
    out["nfields"] = CHUNK_FIELDS
    out["id_len"], out["id"] = key_len, [k for k, _ in members]
    steps = np.stack([r.steps for r in chunks])
    values = {"first": steps[:, 0], "last": steps[:, -1], "n": rows, "width": max(x_width, grad_width, 0)}
    for name, value in values.items():
        out[f"{name}_len"], out[name] = 4, value
    fill_array(out, "steps", INT4_OID, 4, steps)
    for name, attr in (("f", "f"), ("gn", "grad_norm"), ("lr", "lr")):
        fill_array(out, name, FLOAT8_OID, 8, np.stack([getattr(r, attr) for r in chunks]))
    for name, width in (("x", x_width), ("grad", grad_width)):
        if width < 0:
            out[f"{name}_len"] = -1
        else:
            fill_array(out, name, FLOAT8_OID, 8, np.stack([getattr(r, name).reshape(-1) for r in chunks]))
    return out.tobytes()


# -- Reading: history rows as the API's text, formatted by PostgreSQL itself ---------------------
#
# An export of a narrow history spends nearly all its time turning floats into text. PostgreSQL's
# float8 output (extra_float_digits >= 1, the default since PostgreSQL 12) is the shortest text
# that reads back as the same double, as Python's ``repr`` is: the same digits. Only the notation
# differs, and the expressions below rewrite it in SQL, so the server (on its own core) writes the
# API's exact bytes: 'NaN'/'Infinity'/'-Infinity' become Python's 'nan'/'inf'/'-inf' (or the JSON
# strings "NaN"/"Infinity"/"-Infinity"), an integral value gains '.0' ('640' -> '640.0', '-0' ->
# '-0.0'), and a value of 16 integer digits, which PostgreSQL writes as 'd.ddde+15' and Python in
# positional notation, is written out positionally. Every other value is the same text on both.

def repr_sql(value: str, text: str, json_strings: bool = False) -> str:
    """SQL for Python's ``repr`` of the float8 column ``value``, whose PostgreSQL text is the
    column ``text``; with ``json_strings``, what ``json.dumps(json_safe(v))`` writes
    (non-finite values as the strings "NaN", "Infinity", "-Infinity"). Tests on the value, not
    its text, decide (cheaper): a value that is not integral and under 1e15 (nearly all) is its
    text; an integral one under 1e15 gains '.0'; from 1e16 on both write an exponent."""
    if json_strings:
        nan, inf, ninf = "'\"NaN\"'", "'\"Infinity\"'", "'\"-Infinity\"'"
    else:
        nan, inf, ninf = "'nan'", "'inf'", "'-inf'"
    digits = f"replace(split_part(ltrim({text}, '-'), 'e', 1), '.', '')"
    positional = (f"(CASE WHEN {value} < 0 THEN '-' ELSE '' END || (SELECT CASE WHEN length(d) <= 16 "
                  f"THEN rpad(d, 16, '0') || '.0' ELSE left(d, 16) || '.' || substr(d, 17) END FROM (SELECT {digits} AS d) AS q))")
    # PostgreSQL orders NaN above every number and equal to itself. From 2**53 on, where
    # consecutive doubles are whole numbers apart, PostgreSQL's shortest text can differ from
    # Python's (for 1e23 it writes 9.999999999999999e+22: it never takes a rounding interval's
    # bound); such a value goes out as its text between MARK_OPEN and MARK_CLOSE, for the
    # reader to rewrite as ``repr(float(text))`` (``unmark``).
    return (f"(CASE WHEN abs({value}) < 1e15 THEN (CASE WHEN {value} <> trunc({value}) THEN {text} ELSE {text} || '.0' END) "
            f"WHEN abs({value}) < {2.0 ** 53:.0f} THEN {positional} "
            f"WHEN {value} = 'NaN' THEN {nan} WHEN {value} = 'Infinity' THEN {inf} WHEN {value} = '-Infinity' THEN {ninf} "
            f"ELSE chr(1) || {text} || chr(2) END)")


MARK_OPEN, MARK_CLOSE = "\x01", "\x02"
_MARKED = re.compile("\x01([^\x02]*)\x02")


def unmark(text: str) -> str:
    """``text`` with each marked value (see ``repr_sql``) rewritten as Python's ``repr``."""
    if MARK_OPEN not in text:
        return text
    return _MARKED.sub(lambda m: repr(float(m.group(1))), text)


SCALARS = ("f", "grad_norm", "lr")


def text_columns(fields: list[str], numel: int) -> list[str]:
    """The inner query's select list: step, and each float as its value (``v_<name>``,
    ``v_x_<i>``) and its PostgreSQL text (``t_<name>``, ``t_x_<i>``), each computed once a row."""
    out = ["step"]
    for name in fields:
        if name in SCALARS:
            out += [f"{name} AS v_{name}", f"{name}::text AS t_{name}"]
        elif name in ("x", "grad"):
            for i in range(numel):
                out += [f"{name}[{i + 1}] AS v_{name}_{i}", f"{name}[{i + 1}]::text AS t_{name}_{i}"]
    return out


def _cell(name: str, json_strings: bool) -> str:
    return repr_sql(f"v_{name}", f"t_{name}", json_strings)


def csv_line_sql(fields: list[str], numel: int) -> str:
    """SQL for one row's CSV line without its newline, as ``serialize.csv_line`` writes it."""
    cells = []
    for name in fields:
        if name == "step":
            cells.append("step::text")
        elif name in SCALARS:
            cells.append(_cell(name, False))
        elif name in ("x", "grad"):
            cells += [f"coalesce({_cell(f'{name}_{i}', False)}, '')" for i in range(numel)]
    return " || ',' || ".join(cells)


def _nested_sql(cells: list[str], shape: list[int]) -> str:
    """SQL concatenating ``cells`` as the JSON of ``serialize.reshape(cells, shape)``."""
    dims = list(shape) if len(shape) > 1 else [len(cells)]

    def build(offset: int, level: int) -> tuple[str, int]:
        if level == len(dims) - 1:
            part = " || ', ' || ".join(cells[offset:offset + dims[level]])
            return "'[' || " + part + " || ']'", offset + dims[level]
        parts = []
        for _ in range(dims[level]):
            inner, offset = build(offset, level + 1)
            parts.append(inner)
        return "'[' || " + " || ', ' || ".join(parts) + " || ']'", offset

    return build(0, 0)[0]


def json_line_sql(fields: list[str], shape: list[int], numel: int) -> str:
    """SQL for one row's JSON object, as ``serialize.json_row`` writes it (an x or grad that is
    not stored is left out). ``fields`` starts with "step"."""
    parts = []
    for name in fields:
        key = json.dumps(name) + ": "
        if name == "step":
            parts.append(f"'{{{key}' || step::text")
        elif name in SCALARS:
            parts.append(f"', {key}' || {_cell(name, True)}")
        elif name in ("x", "grad"):
            nested = _nested_sql([_cell(f"{name}_{i}", True) for i in range(numel)], shape)
            parts.append(f"(CASE WHEN v_{name}_0 IS NULL THEN '' ELSE ', {key}' || {nested} END)")
    return " || ".join(parts) + " || '}'"
