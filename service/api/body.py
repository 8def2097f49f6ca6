"""What a request body holds: JSON (UTF-8 only, no key twice in one object), or a job (or a
sweep) submitted with its tensors as ``.npy`` files: ``multipart/form-data`` with a ``spec`` part
(the job spec, or the sweep request, as JSON, without x0 when x0 is uploaded), an ``x0`` part and
``data.NAME`` parts (a sweep's go into its ``base``).

An uploaded array is read with ``allow_pickle=False`` (a .npy never runs code), must hold real
numbers (bool, integer or float; converted to float64), and joins the spec where its JSON would
have been, so it meets the same checks, limits and admission as a JSON spec.
"""
from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
from flask import request

from service.errors import DescentError, ErrorCode

MULTIPART = "multipart/form-data"
SPEC_PART = "spec"
DATA_PREFIX = "data."


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, refusing a key given twice (json would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def read_json_body() -> Any:
    """The request body as JSON, or a 400 that says what is wrong with it."""
    return parse_json(request.get_data(cache=False))


def parse_json(raw: bytes, what: str = "the request body") -> Any:
    """``raw`` (``what``: where it came from) as JSON, or a 400 that says what is wrong with it."""
    if not raw.strip():
        raise DescentError(f"{what} is empty; send the job spec as JSON", code=ErrorCode.INVALID_JSON)
    if b"\x00" in raw[:4] or raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # JSON text in UTF-8 never holds a NUL
        raise DescentError(f"{what} is not UTF-8 text (it looks like UTF-16 or UTF-32); send JSON in UTF-8",
                           code=ErrorCode.INVALID_JSON)
    try:
        # Decoded here: json.loads of bytes would also take UTF-16 and UTF-32 (RFC 8259: UTF-8 only).
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise DescentError(f"{what} names the key {exc.key[:80]!r} twice in one object",
                           code=ErrorCode.INVALID_JSON, field=exc.key[:80]) from None
    except UnicodeDecodeError:
        raise DescentError(f"{what} is not UTF-8 text", code=ErrorCode.INVALID_JSON) from None
    except json.JSONDecodeError as exc:
        raise DescentError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code=ErrorCode.INVALID_JSON) from None
    except RecursionError:
        raise DescentError(f"{what} nests too deeply", code=ErrorCode.INVALID_JSON) from None
    except ValueError:  # an integer literal longer than Python converts (4,300 digits)
        raise DescentError(f"{what} holds a number with too many digits", code=ErrorCode.INVALID_JSON) from None


def is_upload() -> bool:
    """Whether the request sends its spec as a multipart upload."""
    return request.mimetype == MULTIPART


def _bad(field: str, message: str) -> DescentError:
    return DescentError(message, code=ErrorCode.INVALID_SPEC, field=field)


def read_upload() -> tuple[bytes, dict[str, bytes]]:
    """A multipart upload's parts as sent: the spec's JSON text, and {part name: .npy bytes}."""
    files, form = request.files, request.form
    for name in {*files.keys(), *form.keys()}:  # one value a name, as one key an object in JSON
        if len(files.getlist(name)) + len(form.getlist(name)) > 1:
            raise _bad(name, f"the upload has more than one part named {name[:80]!r}")
    if SPEC_PART in files:
        raw = files[SPEC_PART].read()
    elif SPEC_PART in form:
        raw = form[SPEC_PART].encode()
    else:
        raise _bad(SPEC_PART, "a multipart upload needs a 'spec' part: the job spec as JSON")
    for name in form:
        if name != SPEC_PART:
            raise _bad(name, f"form field {name[:80]!r}: send 'spec' as JSON, and 'x0' or 'data.NAME' as .npy file parts")
    return raw, {part: files[part].read() for part in files if part != SPEC_PART}


def upload_spec(raw: bytes, parts: dict[str, bytes], max_elements: int, within: str | None = None) -> dict[str, Any]:
    """The job spec of an upload (``read_upload``), with its uploaded tensors in place (nested
    lists); ``within``: the spec is that member of the uploaded object (a sweep's ``base``). A part
    of more than ``max_elements`` numbers is refused from its header, before its values are read."""
    body = parse_json(raw, "the 'spec' part")
    spec = body.get(within) if isinstance(body, dict) and within else body
    if not isinstance(spec, dict):
        raise _bad(SPEC_PART, f"the 'spec' part must be a JSON object{' with an object ' + repr(within) if within else ''}"
                              f" (the {'sweep request' if within else 'job spec'})")
    for part, content in parts.items():
        if part == "x0":
            field = "x0"
        elif part.startswith(DATA_PREFIX) and len(part) > len(DATA_PREFIX):
            field = part
        else:
            raise _bad(part, f"unknown upload {part[:80]!r}: send 'x0' or 'data.NAME' as .npy files")
        values = _npy(content, field, max_elements).tolist()
        if field == "x0":
            if "x0" in spec:
                raise _bad("x0", "x0 is given twice: in the spec and as an upload")
            spec["x0"] = values
        else:
            name = field[len(DATA_PREFIX):]
            data = spec.setdefault("data", {})
            if not isinstance(data, dict):
                raise _bad("data", "'data' must be an object of named tensors")
            if name in data:
                raise _bad(field, f"data.{name[:80]} is given twice: in the spec and as an upload")
            data[name] = values
    return body


def _npy(raw: bytes, field: str, max_elements: int) -> np.ndarray:
    """An uploaded .npy file's array as float64; a 400 naming ``field`` if it is not one of numbers,
    a 413 if its header says more than ``max_elements`` of them (a byte of bool is 8 of float64)."""
    try:
        shape = _npy_shape(raw)
    except Exception as exc:  # noqa: BLE001 - whatever numpy makes of bytes that are not a .npy
        raise _bad(field, f"{field} is not a .npy file of numbers ({str(exc)[:120]})") from None
    if math.prod(shape) > max_elements:
        raise DescentError(f"{field} holds {math.prod(shape):,} numbers, over the limit of {max_elements:,} "
                           "(max_elements)", code=ErrorCode.LIMIT_EXCEEDED, field=field, status=413)
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever numpy makes of bytes that are not a .npy
        raise _bad(field, f"{field} is not a .npy file of numbers ({str(exc)[:120]})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise _bad(field, f"{field} must hold real numbers (bool, integer or float), not {getattr(array, 'dtype', '?')}")
    array = array.astype(np.float64)
    if array.ndim == 0:
        raise _bad(field, f"{field} must have at least one dimension")
    if not np.isfinite(array).all():
        raise _bad(field, f"{field} holds NaN or infinite numbers")
    return array


def _npy_shape(raw: bytes) -> tuple[int, ...]:
    """The shape a .npy file's header states."""
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, _ = read(stream)
    return tuple(shape)
