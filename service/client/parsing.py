"""The cells of the API's history CSV as float64, a large block of lines at a time, bit for bit
what Python's ``float`` reads, in a few dozen numpy passes rather than one C call a number.

A number's text is taken apart, not read as a float: its digits as one integer (``np.fromstring``
reads integers eight times faster than floats, whose correctly rounded reading is where the time
went) and its exponent from where the dot and the ``e`` stand. The integer and the power of ten
are joined with correct rounding as Clinger's fast path does where both are exact in a double
(one multiplication or division) and otherwise by the Eisel-Lemire algorithm (Nigel Tao's
write-up, https://nigeltao.github.io/blog/2020/eisel-lemire.html), here on whole arrays: a
64 x 128-bit product with a power of ten's truncated 128-bit mantissa, which either says the
correctly rounded double or that it cannot tell. The cells it cannot tell (about one in a
thousand), the non-finite ones (``nan``, ``inf``), numbers of more than 18 significant digits
(the API's have at most 17) and subnormal or overflowing ones are read by ``float`` one by one.
Empty cells are NaN and marked."""
from __future__ import annotations

import warnings

import numpy as np

from service.client.errors import DescentClientError

_COMMA, _NEWLINE, _DOT, _MINUS, _PLUS, _E, _ZERO = b",\n.-+e0"
# The bytes of a cell this module reads itself; a cell holding any other ("nan", "inf") is read by float.
_PLAIN = b"0123456789.,-+e\n"
_OTHER = np.ones(256, dtype=bool)
_OTHER[list(_PLAIN)] = False
# Lines and exponents become separators and dots go: "-1.25e-07\n" reads as the integers -125, -7.
_AS_INTEGERS = bytes.maketrans(b"\ne", b",,")
_MAX_DIGITS = 18  # significant digits an int64 holds, whatever they are
_U64 = np.uint64
_LOW32, _32, _63 = _U64(0xFFFFFFFF), _U64(32), _U64(63)
_NINE_BITS = _U64(0x1FF)
_MANTISSA = _U64((1 << 52) - 1)
# Clinger's fast path: a mantissa of at most 53 bits times or over an exact power of ten.
_DIVIDE_BY = np.array([float(10 ** k) for k in range(22, 0, -1)] + [1.0] * 23)
_MULTIPLY_BY = np.array([1.0] * 22 + [float(10 ** k) for k in range(23)])
_FAST_MANTISSA = _U64(1 << 53)
_MIN_EXP10, _MAX_EXP10 = -348, 347


def _powers_of_ten() -> tuple[np.ndarray, np.ndarray]:
    """The high and low 64 bits of 10**q's mantissa to 128 bits, rounded down, q from -348 to
    347 (the Eisel-Lemire table; 10**q is about that times 2**(floor(q * log2(10)) - 127))."""
    high, low = [], []
    for q in range(_MIN_EXP10, _MAX_EXP10 + 1):
        if q >= 0:
            power = 10 ** q
            shift = power.bit_length() - 128
            mantissa = power >> shift if shift > 0 else power << -shift
        else:
            divisor = 10 ** -q
            mantissa = (1 << (divisor.bit_length() + 127)) // divisor
        high.append(mantissa >> 64)
        low.append(mantissa & ((1 << 64) - 1))
    return np.array(high, dtype=np.uint64), np.array(low, dtype=np.uint64)


_TEN_HIGH, _TEN_LOW = _powers_of_ten()


def cells(text: bytes, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Whole lines of ``width`` comma-separated cells (each line ending in a newline) as a
    (lines, width) float64 array, and where cells were empty (None when none was). A value that
    is not a number, or lines of another width, is a ``DescentClientError``."""
    raw = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero((raw == _COMMA) | (raw == _NEWLINE))
    newline = raw[ends] == _NEWLINE
    rows = int(np.count_nonzero(newline))
    n = rows * width
    if len(ends) != n or len(raw) and raw[-1] != _NEWLINE:
        raise DescentClientError(f"the history's CSV has {len(ends):,} cells in {rows:,} rows of {width} columns")
    if not newline[width - 1::width].all():
        line = int(np.flatnonzero(~newline[width - 1::width])[0])
        raise DescentClientError(f"the history's CSV has a line (row {line + 1:,} of a block) that is not "
                                 f"{width} cells")
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    empty = ends == starts
    odd = np.zeros(n, dtype=bool)
    changed = False
    if text.translate(None, _PLAIN):  # bytes of "nan", "inf", or of what is no number
        where = np.flatnonzero(_OTHER[raw])
        odd[np.searchsorted(ends, where)] = True
        raw, changed = raw.copy(), True
        raw[where] = _ZERO  # read as 0 here, by float below
    cell_starts, cell_ends = starts, ends
    if empty.any():
        raw, changed = np.insert(raw, ends[empty], _ZERO), True  # read as 0 here, NaN below
        shift = np.cumsum(empty)
        cell_starts, cell_ends = starts + shift - empty, ends + shift
    values, unsure = _parse(raw, cell_starts, cell_ends, raw.tobytes() if changed else text)
    if values is None:  # not the numbers' grammar: read cell by cell, to name what is wrong
        return _one_by_one(text, width)
    for i in np.flatnonzero(odd | unsure).tolist():
        values[i] = _float(text, int(starts[i]), int(ends[i]))
    if empty.any():
        values[empty] = np.nan
        return values.reshape(rows, width), empty.reshape(rows, width)
    return values.reshape(rows, width), None


def _float(text: bytes, begin: int, end: int) -> float:
    cell = text[begin:end]
    try:
        return float(cell)
    except ValueError:
        raise DescentClientError(f"the history's CSV holds a value that is not a number: {cell[:40]!r}") from None


def _one_by_one(text: bytes, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``cells`` with ``float`` for every cell: for text outside the grammar ``_parse`` reads."""
    found = text.replace(b"\n", b",")[:-1].split(b",")
    empty = np.fromiter((not c for c in found), dtype=bool, count=len(found))
    values = np.array([_float(c, 0, len(c)) if c else np.nan for c in found], dtype=np.float64)
    return values.reshape(-1, width), (empty.reshape(-1, width) if empty.any() else None)


def _parse(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           text: bytes) -> tuple[np.ndarray | None, np.ndarray]:
    """The cells [starts, ends) of ``raw`` (``text``'s bytes), each ``[+-]digits[.digits][e[+-]digits]``
    with at least one digit before the ``e``, as float64, and where a cell's value is still to
    be read by ``float``; (None, ...) when a cell is not of that form."""
    n = len(ends)
    dots = np.flatnonzero(raw == _DOT)
    exps = np.flatnonzero(raw == _E)
    dot_cell = np.searchsorted(ends, dots)
    exp_cell = np.searchsorted(ends, exps)
    nothing = None, np.zeros(0, dtype=bool)
    if (np.diff(dot_cell) <= 0).any() or (np.diff(exp_cell) <= 0).any():
        return nothing  # two dots or two e's in a cell
    stop = ends.copy()  # where each cell's digits end: at its e, or its end
    stop[exp_cell] = exps
    if (dots >= stop[dot_cell]).any():
        return nothing  # a dot in an exponent
    first = raw[starts]
    signed = (first == _MINUS) | (first == _PLUS)
    exp_signed = (raw[exps + 1] == _MINUS) | (raw[exps + 1] == _PLUS) if len(exps) else np.zeros(0, dtype=bool)
    signs = np.count_nonzero(raw == _MINUS) + np.count_nonzero(raw == _PLUS)
    if signs != np.count_nonzero(signed) + np.count_nonzero(exp_signed):
        return nothing  # a sign inside a number
    has_dot = np.zeros(n, dtype=bool)
    has_dot[dot_cell] = True
    digits = stop - starts - signed - has_dot
    if (digits < 1).any() or (ends[exp_cell] - exps - 1 - exp_signed < 1).any():
        return nothing  # a number or an exponent without digits
    unsure = digits > _MAX_DIGITS
    if unsure.any():
        unsure[unsure] = _significant(raw, starts[unsure], stop[unsure]) > _MAX_DIGITS
    with warnings.catch_warnings():  # numpy 1 warns, rather than raising, on text it cannot read
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            numbers = np.fromstring(text.translate(_AS_INTEGERS, b"."), dtype=np.int64, sep=",")
        except ValueError:
            return nothing
    if len(numbers) != n + len(exps):
        return nothing
    exp10 = np.zeros(n, dtype=np.int64)
    exp10[dot_cell] = dots + 1 - stop[dot_cell]  # minus the digits after the dot
    if len(exps):
        at = exp_cell + np.arange(1, len(exps) + 1)  # an exponent follows its number
        exp10[exp_cell] += numbers[at]
        keep = np.ones(len(numbers), dtype=bool)
        keep[at] = False
        numbers = numbers[keep]
    if unsure.any():
        numbers[unsure] = 0
    values, failed = _scaled(np.abs(numbers, out=numbers).view(np.uint64), exp10)
    np.negative(values, out=values, where=first == _MINUS)
    return values, unsure | failed


def _significant(raw: np.ndarray, starts: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """How many digits of each number [starts, stop) count (those after its leading zeros)."""
    width = int((stop - starts).max())
    at = starts[:, None] + np.arange(width)
    text = np.where(at < stop[:, None], raw[np.minimum(at, len(raw) - 1)], _COMMA)
    nonzero = (text > _ZERO) & (text <= ord("9"))
    lead = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), width)
    return np.count_nonzero((text >= _ZERO) & (text <= ord("9")) & (np.arange(width) >= lead[:, None]), axis=1)


def _scaled(mantissa: np.ndarray, exp10: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mantissa * 10**exp10`` correctly rounded (ties to even), and where it could not be told."""
    scale = np.clip(exp10, -22, 22) + 22
    values = mantissa.astype(np.float64)
    values /= _DIVIDE_BY[scale]  # one of the two is 1.0
    values *= _MULTIPLY_BY[scale]
    failed = np.zeros(len(mantissa), dtype=bool)
    rest = np.flatnonzero(((mantissa > _FAST_MANTISSA) | (scale != exp10 + 22)) & (mantissa != 0))
    if len(rest):
        bits, failed[rest] = _eisel_lemire(mantissa[rest], exp10[rest])
        values[rest] = bits.view(np.float64)
    return values, failed


def _eisel_lemire(mantissa: np.ndarray, exp10: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bits of ``mantissa * 10**exp10`` (mantissa > 0) correctly rounded, and where the
    algorithm cannot tell (or the double would be subnormal or infinite): Go's ``eiselLemire64``
    (strconv/eisel_lemire.go), a branch a mask."""
    failed = (exp10 < _MIN_EXP10) | (exp10 > _MAX_EXP10)
    exp10 = np.clip(exp10, _MIN_EXP10, _MAX_EXP10)
    row = exp10 - _MIN_EXP10
    length = np.frexp(mantissa.astype(np.float64))[1].astype(np.uint64)  # bits, or one more where it rounded up
    length -= (mantissa >> (length - _U64(1))) == 0
    zeros = _U64(64) - length
    man = mantissa << zeros
    exp2 = ((217706 * exp10) >> 16) + (64 + 1023) - zeros.astype(np.int64)
    high, low = _product(man, _TEN_HIGH[row])
    wide = ((high & _NINE_BITS) == _NINE_BITS) & (low + man < man)
    if wide.any():  # the wider approximation: the low 64 bits of the power too
        w = np.flatnonzero(wide)
        y_high, y_low = _product(man[w], _TEN_LOW[row[w]])
        merged_low = low[w] + y_high
        merged_high = high[w] + (merged_low < low[w]).astype(np.uint64)
        failed[w] |= (((merged_high & _NINE_BITS) == _NINE_BITS) & (merged_low == _U64(2 ** 64 - 1))
                      & (y_low + man[w] < man[w]))
        high[w], low[w] = merged_high, merged_low
    top = high >> _63
    bits = high >> (top + _U64(9))
    exp2 -= (top ^ _U64(1)).astype(np.int64)
    failed |= (low == 0) & ((high & _NINE_BITS) == 0) & ((bits & _U64(3)) == 1)  # half way: ambiguous
    bits = (bits + (bits & _U64(1))) >> _U64(1)
    carry = bits >> _U64(53)
    bits >>= carry
    exp2 += carry.astype(np.int64)
    failed |= (exp2 <= 0) | (exp2 >= 0x7FF)
    return (np.clip(exp2, 0, 0x7FF).astype(np.uint64) << _U64(52)) | (bits & _MANTISSA), failed


def _product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 64 bits of each a * b (uint64), from 32-bit halves."""
    a_low, a_high, b_low, b_high = a & _LOW32, a >> _32, b & _LOW32, b >> _32
    low_low, low_high, high_low = a_low * b_low, a_low * b_high, a_high * b_low
    middle = (low_low >> _32) + (low_high & _LOW32) + (high_low & _LOW32)
    return (a_high * b_high + (low_high >> _32) + (high_low >> _32) + (middle >> _32),
            (low_low & _LOW32) | (middle << _32))
