"""Liveness under heavy requests: do ``/healthz`` and ``/readyz`` still answer at once (issue 22.8),
and how much does the API grow with concurrent surfaces (issue 22.4)?

    python benchmarks/health_load.py [--seconds 15] [--quick] [--surfaces 8] [--bodies 4]
                                     [--body-floats 500000] [--n 40] [--keepalive]

Starts a private embedded API (``descent api``, waitress, SQLite + SQL broker, no worker, no
tokens on loopback) and submits one job whose objective is heavy to evaluate,
``sum(outer(x, x))`` over 8,000 elements (about 700 MiB at its peak, admitted under the default
DESCENT_MAX_OBJECTIVE_BYTES of 1 GiB). With no worker it stays queued; its surface is taken at x0.
Then, in phases of ``--seconds`` of probing each (after a 2 s ramp of the phase's load; a phase
ends when its requests in flight have answered, each bounded by 120 s):

- ``idle``: nothing but the probe;
- ``surfaces``: ``--surfaces`` clients, each in a loop of ``GET /v1/jobs/ID/surface?n=40``;
- ``bodies``: ``--bodies`` clients, each in a loop of ``POST /v1/jobs`` with a ~10 MB body (x0 a
  list of ``--body-floats`` random floats, one step): accepted (202) or refused by a limit, both fine;
- ``both``: the surfaces and the bodies at once.

A probe, in a process of its own (so this script's load threads do not hold its GIL), sends
``GET /healthz`` and ``GET /readyz`` every 20 ms, each path on a thread of its own and each
request on a fresh connection as an orchestrator's probe does (``--keepalive``: one connection
per path), and records every latency. A sampler reads the API
process's VmRSS every 100 ms. Per phase it prints p50, p99 and max of each probe, the statuses the
load requests got, and the API's RSS at the phase's start and its peak (growth within the phase,
and over the idle phase's start). Targets (issue 22): /healthz
p99 under 250 ms (goal 100 ms) with 8 surfaces and four 10 MB bodies; 8 concurrent surfaces grow
the API by at most ~1 GiB; every load request answers 2xx/4xx or 503, never another 5xx. The
script exits 1 when any answer was a 5xx other than 503, 0 otherwise (latency is reported, not
enforced: the numbers depend on the machine).
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

# The probe runs in a spawned process that imports this module: what it needs is imported here,
# the service's own modules (slow to import) only in main().

MIB = 1024 * 1024
HEAVY = {"objective": "sum(outer(x, x))", "x0": {"shape": [8000], "init": "ones"}, "steps": 1}
PROBE_EVERY = 0.02
PROBE_TIMEOUT = 10.0
RSS_EVERY = 0.1
LOAD_TIMEOUT = 120.0
PROBE_PATHS = ("/healthz", "/readyz")


# --- the probe (its own process) -----------------------------------------------------------------

def probe_path(port: int, path: str, end: float, keepalive: bool) -> list[tuple[float, int | str]]:
    """GET ``path`` every PROBE_EVERY until ``end`` (a time.monotonic()): [(latency, status)]."""
    results: list[tuple[float, int | str]] = []
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < end:
        began = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            status: int | str = resp.status
            if not keepalive or resp.will_close:
                conn.close()
                conn = None
        except Exception as exc:  # noqa: BLE001 - a failed probe is a result, counted
            status = type(exc).__name__
            if conn is not None:
                conn.close()
            conn = None
        results.append((time.perf_counter() - began, status))
        time.sleep(PROBE_EVERY)
    if conn is not None:
        conn.close()
    return results


def probe(port: int, seconds: float, keepalive: bool, ready: Any, go: Any, out: Any) -> None:
    """The probe process: once ``go`` is set, each of PROBE_PATHS on a thread of its own (a slow
    /readyz does not thin out /healthz) for ``seconds``; puts {path: [(latency, status)]}."""
    ready.set()
    if not go.wait(300):
        return
    end = time.monotonic() + seconds
    results: dict[str, list[tuple[float, int | str]]] = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p, probe_path(port, p, end, keepalive)))
               for p in PROBE_PATHS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + PROBE_TIMEOUT + 30)
    out.put({p: results.get(p, []) for p in PROBE_PATHS})


class Prober:
    """The probe process, started (and its interpreter up) before the load, measuring on ``go()``."""

    def __init__(self, port: int, seconds: float, keepalive: bool) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.seconds = seconds
        self.ready, self.go_event, self.queue = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=probe, args=(port, seconds, keepalive, self.ready, self.go_event, self.queue),
                                daemon=True)
        self.proc.start()
        if not self.ready.wait(120):
            self.close()
            raise RuntimeError("the probe process did not start")

    def go(self) -> None:
        self.go_event.set()

    def results(self) -> dict[str, list[tuple[float, int | str]]]:
        try:
            return self.queue.get(timeout=self.seconds + 2 * PROBE_TIMEOUT + 60)
        finally:
            self.close()

    def close(self) -> None:
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# --- the API's memory -----------------------------------------------------------------------------

def vm_rss(pid: int) -> int:
    """The process's VmRSS in bytes (psutil is not a dependency)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Sampler(threading.Thread):
    """VmRSS of one process every RSS_EVERY seconds, keeping the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, vm_rss(self.pid))
            self.samples += 1
            self.stop.wait(RSS_EVERY)


# --- load -----------------------------------------------------------------------------------------

class Load:
    """Clients each in a loop of one request until ``stop``; statuses and latencies counted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.samples: dict[str, str] = {}  # status -> the first body seen with it (for 5xx reports)
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def add(self, count: int, kind: str, method: str, path: str, body: bytes | None) -> None:
        for _ in range(count):
            t = threading.Thread(target=self._loop, args=(kind, method, path, body), daemon=True)
            self.threads.append(t)
            t.start()

    def _loop(self, kind: str, method: str, path: str, body: bytes | None) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=LOAD_TIMEOUT)
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                key = f"{kind} {resp.status}"
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - a dropped request is a result, counted
                key, data = f"{kind} {type(exc).__name__}", repr(exc).encode()
                if conn is not None:
                    conn.close()
                conn = None
                self.stop.wait(0.2)  # no busy loop against a refusing server
            with self.lock:
                self.statuses[key] += 1
                self.latencies.append(time.perf_counter() - began)
                self.samples.setdefault(key, data[:300].decode("utf-8", "replace"))
        if conn is not None:
            conn.close()

    def finish(self, timeout: float = LOAD_TIMEOUT + 10) -> int:
        """Stop the clients, waiting (bounded) for the requests in flight; the ones still alive."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in self.threads)


def big_body(floats: int) -> bytes:
    rng = random.Random(22)
    return json.dumps({"objective": "(x ** 2).sum()", "x0": [rng.uniform(-1, 1) for _ in range(floats)],
                       "steps": 1}).encode()


def unexpected(status: str) -> bool:
    """A 5xx other than 503: an answer the API must never give."""
    code = status.rsplit(" ", 1)[-1]
    return code.isdigit() and 500 <= int(code) < 600 and code != "503"


# --- figures --------------------------------------------------------------------------------------

def quantiles(latencies: list[float]) -> tuple[float, float, float]:
    """p50, p99, max in ms."""
    if not latencies:
        return (float("nan"),) * 3
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


def fmt_q(q: tuple[float, float, float]) -> str:
    return f"{q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f}"


def fmt_counts(counts: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-"


def run_phase(name: str, port: int, pid: int, seconds: float, ramp: float, keepalive: bool,
              surfaces: int, bodies: int, surface_path: str, body: bytes) -> dict[str, Any]:
    prober = Prober(port, seconds, keepalive)
    rss_start = vm_rss(pid)
    sampler = Sampler(pid)
    sampler.start()
    load = Load(port)
    began = time.perf_counter()
    try:
        load.add(surfaces, "surface", "GET", surface_path, None)
        load.add(bodies, "post", "POST", "/v1/jobs", body)
        if surfaces or bodies:
            time.sleep(ramp)  # the load in flight before the probe starts
        prober.go()
        probes = prober.results()
    finally:
        prober.close()
        alive = load.finish()
        sampler.stop.set()
        sampler.join(5)
    took = time.perf_counter() - began
    row: dict[str, Any] = {"phase": name, "rss_start": rss_start, "rss_peak": max(sampler.peak, rss_start),
                           "statuses": load.statuses, "alive": alive, "load_q": quantiles(load.latencies),
                           "samples": load.samples, "seconds": took}
    for path in PROBE_PATHS:
        row[path] = quantiles([lat for lat, _ in probes[path]])
        row[path + " n"] = len(probes[path])
        row[path + " statuses"] = Counter(str(s) for _, s in probes[path])
    row["bad"] = sorted({k for k in load.statuses if unexpected(k)}
                        | {f"{p} {s}" for p in PROBE_PATHS for s in row[p + " statuses"] if unexpected(f"x {s}")})

    print(f"\n[{name}] {took:.1f} s ({surfaces} surface clients, {bodies} body clients)")
    for path in PROBE_PATHS:
        not_ok = {s: c for s, c in row[path + " statuses"].items() if s != "200"}
        print(f"  {path:<9} p50/p99/max {fmt_q(row[path])} ms  (n={row[path + ' n']}"
              + (f", not 200: {not_ok}" if not_ok else "") + ")")
    if surfaces or bodies:
        print(f"  load      {sum(load.statuses.values())} requests, p50/p99/max {fmt_q(row['load_q'])} ms; "
              f"{fmt_counts(load.statuses)}" + (f"; {alive} clients still in flight" if alive else ""))
    print(f"  API RSS   start {rss_start / MIB:.0f} MiB, peak {row['rss_peak'] / MIB:.0f} MiB, "
          f"growth {(row['rss_peak'] - rss_start) / MIB:+.0f} MiB ({sampler.samples} samples)", flush=True)
    for key in row["bad"]:
        print(f"  UNEXPECTED {key}: {load.samples.get(key, '')!r}")
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [("| phase | /healthz p50 / p99 / max (ms) | /readyz p50 / p99 / max (ms) | load statuses "
              "| API RSS start → peak (MiB) | growth in phase (MiB) | peak − idle (MiB) |"),
             "|---|---|---|---|---|---|---|"]
    idle = rows[0]["rss_start"] if rows else 0
    for r in rows:
        lines.append(f"| {r['phase']} | {fmt_q(r['/healthz'])} | {fmt_q(r['/readyz'])} | {fmt_counts(r['statuses'])} "
                     f"| {r['rss_start'] / MIB:.0f} → {r['rss_peak'] / MIB:.0f} "
                     f"| {(r['rss_peak'] - r['rss_start']) / MIB:+.0f} | {(r['rss_peak'] - idle) / MIB:+.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15, help="length of each phase's probe (default 15)")
    parser.add_argument("--quick", action="store_true", help="a short run: 4 s phases")
    parser.add_argument("--surfaces", type=int, default=8, help="concurrent /surface clients")
    parser.add_argument("--bodies", type=int, default=4, help="concurrent clients posting big bodies")
    parser.add_argument("--body-floats", type=int, default=500_000, help="floats in each big body's x0")
    parser.add_argument("--n", type=int, default=40, help="the surface's n")
    parser.add_argument("--keepalive", action="store_true", help="probe on one keep-alive connection")
    parser.add_argument("--json", action="store_true", help="also print one JSON line of the phases")
    args = parser.parse_args()
    seconds = 4.0 if args.quick else args.seconds
    ramp = 0.5 if args.quick else 2.0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from testkit.processes import service_on

    body = big_body(args.body_floats)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="descent-health-load-") as tmp:
        services = service_on("embedded", Path(tmp))
        svc = next(services)
        try:
            svc.start(workers=0)
            assert svc.api is not None
            pid = svc.api.pid
            job_id = svc.submit(HEAVY)["id"]
            surface_path = f"/v1/jobs/{job_id}/surface?n={args.n}"
            # warm up the code paths (and the compiled objective) the phases use
            warm = svc.http.get(svc.url + surface_path, timeout=LOAD_TIMEOUT)
            warm_post = svc.http.post(svc.url + "/v1/jobs", data=body, timeout=LOAD_TIMEOUT,
                                      headers={"Content-Type": "application/json"})
            svc.http.get(svc.url + "/readyz", timeout=10)
            time.sleep(1.0)
            print(f"descent API (embedded, pid {pid}) on port {svc.port}; job {job_id}: {HEAVY['objective']} "
                  f"over {HEAVY['x0']['shape'][0]:,} elements; warm-up surface {warm.status_code}, "
                  f"post of {len(body) / 1e6:.1f} MB {warm_post.status_code}; {seconds:g} s phases, probe on "
                  f"{'one keep-alive connection' if args.keepalive else 'a fresh connection each'} "
                  f"every {PROBE_EVERY * 1000:.0f} ms", flush=True)

            phases = [("idle", 0, 0), (f"{args.surfaces} surfaces", args.surfaces, 0),
                      (f"{args.bodies} x {len(body) / 1e6:.0f} MB bodies", 0, args.bodies),
                      (f"{args.surfaces} surfaces + {args.bodies} bodies", args.surfaces, args.bodies)]
            for name, surfaces, bodies in phases:
                if svc.api.poll() is not None:
                    raise RuntimeError("the API exited:\n" + svc.logs())
                rows.append(run_phase(name, svc.port, pid, seconds, ramp, args.keepalive,
                                      surfaces, bodies, surface_path, body))
                time.sleep(2.0)  # let the last requests' memory settle before the next baseline
        finally:
            services.close()

    print("\n" + table(rows))
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if isinstance(v, (int, float, str, dict, list, tuple))}
                          for r in rows], default=str))
    bad = [f"{r['phase']}: {k}" for r in rows for k in r["bad"]]
    if bad:
        print("FAILED: unexpected 5xx: " + "; ".join(bad))
        return 1
    print("no 5xx other than 503")
    return 0


if __name__ == "__main__":
    sys.exit(main())
