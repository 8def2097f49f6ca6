"""``job.history()`` as one streamed CSV download parsed into numpy columns: bit for bit the rows
the JSON pages hold (NaN, the infinities, -0.0, subnormals, every float's last bit), for each
choice of fields, every, start and limit, on SQLite and PostgreSQL (whose CSV the database writes);
a download that breaks off is taken up again, or is an error, never a short history."""
from __future__ import annotations

import http.server
import json
import math
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from service.client import (
    Client,
    DescentClientError,
    DescentUnreachable,
    JobHandle,
    columns,
)
from service.client import stream as stream_module
from service.client.jobs import _finite
from service.store import HistoryRows
from service.store import jobs as job_store
from service.store.history import save_chunk
from testkit.processes import BIN, Service, running
from tests.client.proxy import Proxy

pytestmark = pytest.mark.integration

ROWS = 3001
SPEC = {"objective": "(x ** 2).sum()", "x0": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "steps": ROWS - 1,
        "optimizer": {"name": "sgd", "lr": 0.001}, "record": {"grad": True}}
ODD = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from running(request.param, tmp_path_factory.mktemp(f"stream-{request.param}"), workers=0)


@pytest.fixture(scope="module")
def client(service: Service) -> Client:
    return Client(service.url, token="", retry_seconds=5)


def odd_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Floats of every kind: random bit patterns (all 17 digits), NaN, the infinities, -0.0, subnormals."""
    values = rng.standard_normal(shape) * 10.0 ** rng.integers(-300, 300, shape)
    bits = np.frombuffer(rng.bytes(8 * values.size), dtype=np.float64).reshape(shape)
    values = np.where(rng.random(shape) < 0.3, bits, values)
    flat = values.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, 40 * len(ODD)), replace=False)
    flat[picks] = np.resize(np.array(ODD), picks.size)
    return values


def stored_job(service: Service, client: Client, spec: dict[str, Any], batch: HistoryRows) -> JobHandle:
    """A job whose history is ``batch``, written as a worker writes it (no worker runs it)."""
    job = client.submit(spec)
    db = service.db()
    assert job_store.claim_job(db, job.id, "w1", 300, 3) is not None
    save_chunk(db, job.id, "w1", batch, None, None, 300)
    return job


@pytest.fixture(scope="module")
def odd_job(service: Service, client: Client) -> JobHandle:
    """3,001 rows of a 2x3 x (and grad) holding floats of every kind."""
    rng = np.random.default_rng(27)
    steps = np.arange(ROWS)
    batch = HistoryRows(steps=steps, f=odd_values(rng, (ROWS,)), grad_norm=odd_values(rng, (ROWS,)),
                         lr=odd_values(rng, (ROWS,)), x=odd_values(rng, (ROWS, 6)), grad=odd_values(rng, (ROWS, 6)))
    return stored_job(service, client, SPEC, batch)


def bits(value: Any) -> Any:
    """``value`` with each float as its 64 bits, so that == is bit-for-bit (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, list):
        return [bits(v) for v in value]
    if isinstance(value, dict):
        return {k: bits(v) for k, v in value.items()}
    return value


def paged(job: JobHandle, **kwargs: Any) -> list[dict[str, Any]]:
    """The rows as the JSON pages give them (non-finite spellings read back as floats)."""
    return [_finite(row) for page in job.history_pages(**kwargs) for row in page]


def test_history_is_the_json_pages_bit_for_bit(odd_job):
    json_rows = paged(odd_job)
    assert len(json_rows) == ROWS and np.array(json_rows[5]["x"]).shape == (2, 3)
    rows = odd_job.history(as_frame=False)
    assert list(rows[0]) == ["step", "f", "grad_norm", "lr", "x", "grad"]
    assert bits(rows) == bits(json_rows)
    seen = {repr(v) for r in rows for v in (r["f"], r["lr"], *r["x"][0], *r["grad"][1])}
    assert {"nan", "inf", "-inf", "-0.0", "5e-324"} <= seen  # the test holds what it means to


@pytest.mark.parametrize("kwargs", [
    {"fields": ["f"]}, {"fields": "x,lr"}, {"fields": ["grad"], "every": 7}, {"every": 100, "start": 150},
    {"start": 2999}, {"start": 5000}, {"limit": 1}, {"limit": 1234, "every": 2, "start": 3},
    {"fields": ["grad_norm", "x"], "limit": 10, "start": 2995},
])
def test_fields_every_start_and_limit_as_the_pages_give_them(odd_job, kwargs):
    assert bits(odd_job.history(as_frame=False, **kwargs)) == bits(paged(odd_job, **kwargs))


def test_history_arrays_are_the_columns(odd_job):
    rows = paged(odd_job)
    found = odd_job.history_arrays()
    assert list(found) == ["step", "f", "grad_norm", "lr", "x", "grad"]
    assert found["step"].dtype == np.int64 and found["step"].tolist() == list(range(ROWS))
    assert found["x"].shape == (ROWS, 2, 3) and found["x"].dtype == np.float64
    assert found["x"].tobytes() == np.array([r["x"] for r in rows], dtype=np.float64).tobytes()
    assert found["lr"].tobytes() == np.array([r["lr"] for r in rows], dtype=np.float64).tobytes()
    narrow = odd_job.history_arrays(fields="f", every=1000)
    assert list(narrow) == ["step", "f"] and narrow["step"].tolist() == [0, 1000, 2000, 3000]
    empty = odd_job.history_arrays(start=10**6)
    assert empty["x"].shape == (0, 6) and empty["step"].shape == (0,)


def test_a_frame_is_the_frame_of_the_pages_rows(odd_job):
    pandas = pytest.importorskip("pandas")
    frame, want = odd_job.history(), pandas.DataFrame(paged(odd_job))
    assert isinstance(frame, pandas.DataFrame) and list(frame.columns) == list(want.columns)
    assert all(bits(frame[c].tolist()) == bits(want[c].tolist()) for c in want.columns)
    assert str(frame["step"].dtype) == str(want["step"].dtype) and str(frame["f"].dtype) == str(want["f"].dtype)
    small = odd_job.history(fields="f", every=1000)
    assert list(small.columns) == ["step", "f"] and small["step"].tolist() == [0, 1000, 2000, 3000]


def test_pages_of_a_limit_larger_than_one_request(odd_job, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_ROWS", 400)  # as a limit over the API's 100,000 rows does
    assert bits(odd_job.history(limit=2500, start=1, as_frame=False)) == bits(paged(odd_job, limit=2500, start=1))
    assert len(odd_job.history(as_frame=False, fields="f")) == ROWS


# -- a download that breaks off ---------------------------------------------------------------


class CuttingProxy(Proxy):
    """A TCP proxy to the API that cuts the answer to each of the first ``cuts`` history
    downloads (format=csv or ndjson) after ``after`` bytes, and passes everything else on."""

    def __init__(self, upstream_port: int, after: int, cuts: int) -> None:
        self.after, self.cuts = after, cuts
        super().__init__(upstream_port)

    def _handle(self, conn: socket.socket, index: int) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        state = {"armed": False}

        def up() -> None:
            try:
                while data := conn.recv(65536):
                    if (b"format=csv" in data or b"format=ndjson" in data) and self.cuts > 0:
                        self.cuts -= 1
                        state["armed"] = True
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if state["armed"] and sent + len(data) >= self.after:
                    conn.sendall(data[:max(0, self.after - sent)])
                    break
                sent += len(data)
                conn.sendall(data)
        except OSError:
            pass
        for s in (conn, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_broken_download_is_taken_up_again_from_the_last_whole_row(service, odd_job):
    want = bits(paged(odd_job))
    whole = service.http.get(f"{service.url}/v1/jobs/{odd_job.id}/history", params={"format": "csv"}).content
    proxy = CuttingProxy(service.port, after=len(whole) // 3 + 17, cuts=2)  # two cuts, each inside a row
    try:
        job = JobHandle(Client(proxy.url, token="", retry_seconds=10), odd_job.id)
        lines = stream_module.HistoryStream(job.client, job.id)
        assert b"".join(lines) == whole and lines.resumed == 2 and lines.rows == ROWS
        proxy.cuts = 2
        assert bits(job.history(as_frame=False)) == want
        proxy.cuts = 1
        assert b"".join(job.export("ndjson", every=3)) == service.http.get(
            f"{service.url}/v1/jobs/{odd_job.id}/history", params={"format": "ndjson", "every": 3}).content
    finally:
        proxy.close()


def test_a_broken_download_that_cannot_be_taken_up_is_an_error_not_a_short_history(service, odd_job):
    proxy = CuttingProxy(service.port, after=50_000, cuts=1)
    try:
        job = JobHandle(Client(proxy.url, token="", retry_seconds=0), odd_job.id)
        with pytest.raises(DescentUnreachable) as err:
            job.history(as_frame=False)
        assert "broke off after" in str(err.value) and "rows" in str(err.value) and proxy.url in str(err.value)
        assert err.value.status is None and "\n" not in str(err.value)
    finally:
        proxy.close()


class Unframed(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.0 server of a 50-row history whose first CSV answer stops after 20 whole rows,
    its end told by nothing but the connection closing."""

    protocol_version = "HTTP/1.0"
    served = 0
    lines: ClassVar[list[bytes]] = [f"{i},{i / 7!r},1.0,0.5\n".encode() for i in range(50)]

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        start = int(query.get("start", 0))
        rows = [line for line in self.lines if int(line.split(b",")[0]) >= start]
        self.send_response(200)
        if query.get("format") == "csv":
            type(self).served += 1
            body = b"step,f,grad_norm,lr\n" + b"".join(rows[:20] if self.served == 1 else rows)
            self.send_header("Content-Type", "text/csv")
        else:
            body = json.dumps({"rows": [{"step": int(r.split(b",")[0])} for r in rows[:1]],
                               "next_start": None}).encode()
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_answer_whose_end_nothing_vouches_for_is_checked():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unframed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job = JobHandle(Client(f"http://127.0.0.1:{server.server_address[1]}", token="", retry_seconds=5), "j")
        found = job.history_arrays()
        assert found["step"].tolist() == list(range(50)) and Unframed.served == 2
        assert found["f"].tolist() == [i / 7 for i in range(50)]
    finally:
        server.shutdown()
        server.server_close()


# -- parsing ---------------------------------------------------------------------------------


def test_empty_cells_are_none_or_a_missing_x():
    layout = columns.Layout.parse(b"step,f,grad_norm,lr,x_0,x_1\n")
    block = columns.parse_lines(b"0,1.5,nan,-inf,0.25,-0.0\n1,2.5,,1e-05,,\n2,inf,3.0,0.1,1.0,2.0\n", layout.width)
    assert block.empty is not None
    rows = columns.rows(layout, block, [2])
    assert bits(rows) == bits([{"step": 0, "f": 1.5, "grad_norm": math.nan, "lr": -math.inf, "x": [0.25, -0.0]},
                               {"step": 1, "f": 2.5, "grad_norm": None, "lr": 1e-05},
                               {"step": 2, "f": math.inf, "grad_norm": 3.0, "lr": 0.1, "x": [1.0, 2.0]}])
    spelled = columns.rows(layout, block, [2], json_strings=True)
    assert spelled[0] == {"step": 0, "f": 1.5, "grad_norm": "NaN", "lr": "-Infinity", "x": [0.25, -0.0]}
    assert spelled[2]["f"] == "Infinity"
    found = columns.arrays(layout, [block], [2])
    assert np.isnan(found["x"][1]).all() and found["x"].shape == (3, 2)
    with pytest.raises(DescentClientError):
        columns.parse_lines(b"0,1.5,abc,1,2,3\n", layout.width)
    with pytest.raises(DescentClientError):
        columns.parse_lines(b"0,1.5,1\n", layout.width)


def test_parsing_is_exact_for_every_float():
    rng = np.random.default_rng(3)
    values = odd_values(rng, (20_000, 4))
    text = "".join(f"{i},{','.join(map(repr, row))}\n" for i, row in enumerate(values.tolist())).encode()
    block = columns.parse_lines(text, 5)
    values[np.isnan(values)] = math.nan  # one NaN: the text of every NaN is "nan", whatever its payload
    assert block.empty is None and block.values[:, 1:].tobytes() == values.tobytes()


def decimal_texts(rng: np.random.Generator, count: int) -> list[bytes]:
    """Numbers as text of every form float() reads that the parser reads itself: 1 to 19 digits,
    a dot anywhere or none, signs, exponents from -360 to 360, leading zeros."""
    out = []
    for digits, exp, dot, sign, form in zip(rng.integers(1, 20, count).tolist(), rng.integers(-360, 361, count).tolist(),
                                            rng.integers(0, 21, count).tolist(), rng.integers(0, 3, count).tolist(),
                                            rng.integers(0, 4, count).tolist()):
        text = "".join(map(str, rng.integers(0, 10, digits).tolist()))
        if form and dot <= len(text):
            text = text[:dot] + "." + text[dot:]
        if form != 1:
            text += f"e{exp:+d}" if form == 3 else f"e{exp}"
        out.append((["", "-", "+"][sign] + text).encode())
    return out


def near_halfway(rng: np.random.Generator, count: int) -> list[bytes]:
    """Decimals at and beside the exact midpoints between neighbouring doubles (where rounding is
    hardest): the midpoint cut to 16-19 digits, one unit either side, and the whole of it."""
    import decimal

    context = decimal.Context(prec=1000)
    out = []
    for x in np.abs(rng.standard_normal(count) * 10.0 ** rng.integers(-300, 300, count)).tolist():
        if x == 0 or math.isinf(x):
            continue
        mid = context.divide(context.add(decimal.Decimal(x), decimal.Decimal(math.nextafter(x, math.inf))), 2)
        mantissa, exp = format(mid, "e").split("e")
        digits = mantissa.replace(".", "")
        out.append(format(mid, "e").encode())
        for n in (16, 17, 18, 19):
            for delta in (-1, 0, 1):
                out.append(f"{int(digits[:n]) + delta}e{int(exp) - n + 1}".encode())
    return out


def test_parsing_reads_every_number_as_float_does():
    rng = np.random.default_rng(29)
    edges = [b"0", b"-0", b"-0.0", b"5e-324", b"2.2250738585072011e-308", b"1.7976931348623157e+308",
             b"1.7976931348623159e308", b"1e-400", b"1e400", b"9007199254740993", b"1e22", b"1e23", b".5", b"5.",
             b"-.5", b"0.00012345678901234567", b"123456789012345678901234567890", b"0" * 30 + b"1.5", b"nan",
             b"-inf", b"inf"]
    cells = edges + decimal_texts(rng, 40_000) + near_halfway(rng, 1500)
    cells += [b"0"] * (-len(cells) % 4)
    text = b"".join(c + (b"\n" if i % 4 == 3 else b",") for i, c in enumerate(cells))
    block = columns.parse_lines(text, 4)
    want = np.array([float(c) for c in cells])
    assert block.empty is None and block.values.shape == (len(cells) // 4, 4)
    assert block.values.reshape(-1).tobytes() == want.tobytes()


@pytest.mark.parametrize("cell", [b"abc", b"1.2.3", b"--2", b"-", b"2e", b"e5", b".", b"1e5.5", b"1-2", b"1e5e5"])
def test_a_cell_that_is_no_number_is_named(cell):
    with pytest.raises(DescentClientError, match="not a number") as err:
        columns.parse_lines(b"0,1.5,2\n1," + cell + b",3\n", 3)
    assert repr(cell) in str(err.value)


def test_rows_made_with_the_collector_paused_are_not_left_to_its_next_young_collection():
    import gc

    if not gc.isenabled() or gc.get_freeze_count():
        pytest.skip("the collector is off, or something holds objects frozen")
    with columns.gc_paused():
        made = [{"x": [float(i)]} for i in range(20_000)]
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_count()[0] < 1000 and len(made) == 20_000


# -- the command -----------------------------------------------------------------------------


def descent(url: str, *args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DESCENT_TOKEN", "DESCENT_RETRY_SECONDS")}
    return subprocess.run([str(BIN / "descent"), *args], env={**env, "DESCENT_URL": url}, capture_output=True,
                          timeout=180)


def test_descent_history_streams_the_pages_json_and_the_apis_csv(service, odd_job):
    out = descent(service.url, "history", odd_job.id)
    assert out.returncode == 0, out.stderr
    pages = [row for page in odd_job.history_pages() for row in page]  # "NaN" spelled as the API does
    want = "[\n" + ",\n".join(json.dumps(row) for row in pages) + "\n]\n"
    assert out.stdout.decode() == want
    some = descent(service.url, "history", odd_job.id, "--fields", "f,x", "--every", "500", "--start", "1")
    pages = [row for page in odd_job.history_pages(fields="f,x", every=500, start=1) for row in page]
    assert some.stdout.decode() == "[\n" + ",\n".join(json.dumps(row) for row in pages) + "\n]\n"
    assert descent(service.url, "history", odd_job.id, "--start", "999999").stdout == b"[]\n"
    csv = descent(service.url, "history", odd_job.id, "--csv", "--every", "3")
    assert csv.stdout == service.http.get(f"{service.url}/v1/jobs/{odd_job.id}/history",
                                          params={"format": "csv", "every": 3}).content
