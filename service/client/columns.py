"""The API's history CSV as numpy columns, parsed a large block of lines at a time as it streams in.

The CSV is the API's own (``serialize.csv_line``): ``step``, then f, grad_norm and lr, then x and
grad one column per element (``x_0`` ... ``x_{n-1}``), each float as Python's ``repr`` (the
shortest text that reads back as the same float: ``nan``, ``inf`` and ``-inf`` for the
non-finite ones), and x/grad cells empty for a row that has none stored. A block is read by
``service.client.parsing`` in whole-array passes, bit for bit the floats the API wrote."""
from __future__ import annotations

import collections
import contextlib
import functools
import gc
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.client import parsing
from service.client.errors import DescentClientError

SCALARS = ("f", "grad_norm", "lr")
VECTORS = ("x", "grad")
# Lines are parsed once about this many bytes of them have come, on this many threads (0: on the
# reading thread itself: the API buffers what is sent meanwhile, and a parsing thread beside one
# making rows spent its time waiting for Python's lock: history() took 1.2-1.5x the CSV download
# with none, 1.35-1.9x with one or two, on a loaded 2-core machine).
BLOCK_BYTES = 1 << 20
PARSE_THREADS = 0
_JSON_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


@dataclass
class Layout:
    """Where each field's values are among a CSV line's cells."""

    names: list[str]
    order: list[str] = field(default_factory=list)  # step, f, ..., x, grad: the fields present, in order
    cols: dict[str, int | tuple[int, int]] = field(default_factory=dict)  # scalar: its cell; x/grad: [lo, hi)

    @classmethod
    def parse(cls, header: bytes) -> Layout:
        names = header.rstrip(b"\r\n").decode("ascii", "replace").split(",")
        if not names or names[0] != "step":
            raise DescentClientError(f"the history's CSV header is not the API's: {header[:80]!r}")
        layout = cls(names)
        for i, name in enumerate(names):
            base, _, index = name.rpartition("_")
            if name == "step" or name in SCALARS:
                layout.order.append(name)
                layout.cols[name] = i
            elif base in VECTORS and index.isdigit():
                if base not in layout.cols:
                    layout.order.append(base)
                    layout.cols[base] = (i, i)
                lo, _ = layout.cols[base]  # type: ignore[misc]
                layout.cols[base] = (lo, i + 1)
            else:
                raise DescentClientError(f"the history's CSV has a column this client does not know: {name[:40]!r}")
        return layout

    @property
    def width(self) -> int:
        return len(self.names)

    def numel(self) -> int:
        """Values of x (or grad) a row has: the number of x_i (or grad_i) columns."""
        for name in VECTORS:
            if name in self.cols:
                lo, hi = self.cols[name]  # type: ignore[misc]
                return hi - lo
        return 0


@dataclass
class Block:
    """Rows of the history: ``values`` (rows x cells, float64, NaN where a cell was empty) and
    ``empty`` (the same shape, True where a cell was empty; None when none was)."""

    values: np.ndarray
    empty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)


def parse_lines(text: bytes, width: int) -> Block:
    """Whole CSV lines (each ending in a newline) of ``width`` cells as a ``Block``."""
    values, empty = parsing.cells(text, width)
    return Block(values, empty)


def blocks(lines: Iterable[bytes], block_bytes: int | None = None, threads: int | None = None,
           on_header: Callable[[Layout], object] | None = None) -> Iterator[tuple[Layout, Block]]:
    """``(layout, block)`` for about each ``block_bytes`` of ``lines`` (pieces of whole CSV lines,
    the header first), in order, parsed as they come; at least one (perhaps empty) block once the
    header came, ``on_header`` called with its layout as soon as it did.

    With ``threads`` (``PARSE_THREADS``) above 0 the parsing runs on that many threads while
    ``lines`` is read on, and a block is handed out as soon as it and those before it are parsed;
    with 0 each block is parsed where it is read."""
    block_bytes = block_bytes or BLOCK_BYTES
    threads = PARSE_THREADS if threads is None else threads
    layout: Layout | None = None
    pending: list[bytes] = []
    size = 0
    queue: collections.deque[Future[Block]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="history-parse") if threads > 0 else None

    def parse(text: bytes, width: int) -> Future[Block]:
        if pool is not None:
            return pool.submit(parse_lines, text, width)
        done: Future[Block] = Future()
        done.set_result(parse_lines(text, width))
        return done

    try:
        for piece in lines:
            if layout is None:
                cut = piece.find(b"\n") + 1
                layout = Layout.parse(piece[:cut])
                if on_header is not None:
                    on_header(layout)
                piece = piece[cut:]
                if not piece:
                    continue
            pending.append(piece)
            size += len(piece)
            if size >= block_bytes:
                queue.append(parse(b"".join(pending), layout.width))
                pending, size = [], 0
            while queue and queue[0].done():
                yield layout, queue.popleft().result()
        if layout is None:
            return
        if pending:
            queue.append(parse(b"".join(pending), layout.width))
        if not queue:
            yield layout, Block(np.empty((0, layout.width)))
        while queue:
            yield layout, queue.popleft().result()
    finally:
        for future in queue:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def dims_of(value: Any, numel: int) -> list[int]:
    """The nesting of one row's x as the API's JSON writes it (lists in lists): the dimensions a
    row's values reshape to (``[numel]`` for a flat one, or one that does not add up)."""
    dims: list[int] = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return dims if dims and math.prod(dims) == numel else [numel]


def arrays(layout: Layout, parts: list[Block], dims: list[int]) -> dict[str, np.ndarray]:
    """Every field's values: step as int64, f, grad_norm and lr as float64, x and grad as float64
    of shape (rows, *dims), NaN where a row has none."""
    values = np.concatenate([p.values for p in parts]) if len(parts) != 1 else parts[0].values
    out: dict[str, np.ndarray] = {}
    for name in layout.order:
        where = layout.cols[name]
        if name == "step":
            out[name] = values[:, where].astype(np.int64)
        elif isinstance(where, int):
            out[name] = np.ascontiguousarray(values[:, where])
        else:
            out[name] = np.ascontiguousarray(values[:, where[0]:where[1]]).reshape(len(values), *dims)
    return out


def rows(layout: Layout, block: Block, dims: list[int], json_strings: bool = False) -> list[dict[str, Any]]:
    """The block's rows as the API's JSON rows read back: ``{"step", "f", ..., "x": nested lists}``,
    a scalar None and x/grad left out where their cells were empty. ``json_strings``: NaN and the
    infinities as the API's JSON spells them ("NaN", "Infinity", "-Infinity"), else floats."""
    with gc_paused():
        return _rows(layout, block, dims, json_strings)


def _rows(layout: Layout, block: Block, dims: list[int], json_strings: bool) -> list[dict[str, Any]]:
    values, n = block.values, len(block)
    keys, columns = [], []
    for name in layout.order:
        where = layout.cols[name]
        keys.append(name)
        if name == "step":
            columns.append(values[:, where].astype(np.int64).tolist())
        elif isinstance(where, int):
            columns.append(values[:, where].tolist())
        elif where[1] > where[0]:
            columns.append(values[:, where[0]:where[1]].reshape(n, *dims).tolist())
        else:
            columns.append([[] for _ in range(n)])
    out = _row_maker(tuple(keys))(columns)
    if block.empty is not None:
        for i in np.flatnonzero(block.empty.any(axis=1)).tolist():
            row, empty = out[i], block.empty[i]
            for name in layout.order:
                where = layout.cols[name]
                if isinstance(where, int):
                    if empty[where]:
                        row[name] = None
                elif empty[where[0]:where[1]].all() and where[1] > where[0]:
                    del row[name]
    if json_strings:
        odd = ~np.isfinite(values)
        if block.empty is not None:
            odd &= ~block.empty
        for i in np.flatnonzero(odd.any(axis=1)).tolist():
            out[i] = {k: _spelled(v) for k, v in out[i].items()}
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a while: making a block's rows makes a dict and a
    list or two a row, none of them garbage, and each collection they would set off walks every
    row made before (it took three quarters of ``history()``'s time for 100,000 rows). At the end
    what is young joins the oldest generation at once (``gc.freeze`` then ``gc.unfreeze``, unless
    something else holds objects frozen): else the first young collection after walks every row
    made meanwhile (50 ms for 100,000 rows)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        gc.enable()


@functools.lru_cache(maxsize=64)
def _row_maker(keys: tuple[str, ...]) -> Any:
    """A function making the rows' dicts from their columns with one dict display each (a third
    quicker than ``dict(zip(keys, cells))``). ``keys`` are the API's field names, checked by
    ``Layout.parse``."""
    if not all(k.isidentifier() for k in keys):
        return lambda columns: [dict(zip(keys, cells)) for cells in zip(*columns)]
    names = [f"v{i}" for i in range(len(keys))]
    display = "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(keys, names)) + "}"
    return eval(f"lambda columns: [{display} for {', '.join(names)}, in zip(*columns)]")


def _spelled(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else _JSON_NON_FINITE[repr(value)]
    if isinstance(value, list):
        return [_spelled(v) for v in value]
    return value
