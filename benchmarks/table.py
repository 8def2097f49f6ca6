"""One table of ratios, every one measured in this run, with the date and the machine.

    python benchmarks/table.py [--quick] [--workers 1] [--json]      (`make bench` runs it full size)

Rows (each compares Descent with a baseline measured here, now):

1. the engine against a bare ``torch.optim`` loop (the functions of ``benchmarks/engine.py``),
   the median of alternating pairs' ratios: the lesson's 2x2 problem (500 SGD steps, every row
   recorded) and a 1,000,000-element parabola (200 steps, record.every = 100);
2. a sweep of 10,000 lesson-sized jobs (Rosenbrock, 500 SGD steps, every 10th row recorded)
   end to end through the API on PostgreSQL + Redis, against the same jobs submitted one at a
   time: a sample of 100 jobs, its mean scaled to 10,000 (``benchmarks/sweep.py``);
3. a burst of 200 independent jobs by ordinary ``POST /v1/jobs``, batching on (the default
   ``DESCENT_BATCH_MAX``) against off (``DESCENT_BATCH_MAX=1``) (``benchmarks/burst.py``);

   rows 2 and 3 end when a client sees the last job finished (a poll of committed rows every
   50 ms, timed by this process's clock), never at a stamp the service writes (``finished_at``);
4. history writes, steps/s: 1,000,000 steps (2 parameters, x recorded) written through the
   store's write path as a worker writes them (``save_chunk``: in engine chunks of the rows the
   engine records of this job in a chunk's 0.25 s on this machine, measured in the same run, each
   its own transaction with the lease renewal; and in the engine's largest chunks, 16,384 rows,
   the path's ceiling; stored as ``history_chunks``) against one plain binary
   COPY of the same rows, one row per step, into a table of the old ``history`` layout (job_id,
   step primary key; its payload built beforehand); ratio the store's steps/s / COPY's rows/s;
5. the CSV export of a 1,000,001-row history through the API against ``psql`` ``COPY ... TO
   STDOUT WITH CSV``, and ``points=1000`` on that history (``benchmarks/history_export.py``);
6. ``?points=1000`` on a 5,000-step 100-parameter job and on a 1,000,000-step 2-parameter job
   against a plain page of 1,000 rows of the same job (``benchmarks/points.py``);
7. a 1,000,000-element job (50 SGD steps) from POST to finished as ``?wait`` sees it, against the
   bare ``torch.optim`` loop, and ``GET /v1/jobs/ID`` of it (time, bytes) and its x as .npy,
   on the embedded default and on PostgreSQL + Redis (``benchmarks/big_x.py``);
8. ``/healthz`` while 8 concurrent surfaces and four 10 MB submits load the API, against the idle
   API (``benchmarks/health_load.py``).

``--quick`` is a smoke run of every row at small sizes (a 500-job sweep with a 20-job sample, a
40-job burst, 100,000 written rows, a 100,001-row export, points on 100,001 rows). Progress goes
to stderr; the table (markdown) to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import burst as burst_bench  # noqa: E402
import engine as engine_bench  # noqa: E402  (benchmarks/engine.py; sets torch to one thread)
import plain_copy  # noqa: E402
import sweep as sweep_bench  # noqa: E402
from service.engine import Chunking  # noqa: E402
from service.spec import check_spec  # noqa: E402

FULL = {"lesson_pairs": 15, "big_pairs": 11, "sweep_jobs": 10_000, "solo": 100, "burst_jobs": 200,
        "write_rows": 1_000_000, "write_pairs": 3, "export_rows": 1_000_001, "export_repeat": 3, "points_repeat": 9,
        "points_rows": 1_000_001}
QUICK = {"lesson_pairs": 7, "big_pairs": 5, "sweep_jobs": 500, "solo": 20, "burst_jobs": 40,
         "write_rows": 100_000, "write_pairs": 3, "export_rows": 100_001, "export_repeat": 1, "points_repeat": 5,
         "points_rows": 100_001}
# The most rows a worker writes in one transaction (the engine's largest chunk): the write path's
# ceiling, which only a job recording 65,536 rows/s reaches; others write what they record in 0.25 s.
CAP_WRITES = Chunking().rows
BASELINE = "history_copy_baseline"  # the writes' baseline: one row per step, as ``history`` was


def say(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- the machine ---------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    pg = "?"
    try:
        from testkit.backends import PG_ADMIN_URL
        out = subprocess.run(["psql", "-X", "-At", "-d", PG_ADMIN_URL, "-c", "SHOW server_version"],
                             capture_output=True, text=True, timeout=10)
        pg = out.stdout.strip().split()[0] if out.returncode == 0 and out.stdout.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram, 1),
            "torch": torch.__version__, "python": platform.python_version(), "postgres": pg,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# -- 1. engine against a bare loop ----------------------------------------------------------------

def pairs(a: Callable[[], None], b: Callable[[], None], n: int) -> dict[str, float]:
    """``n`` alternating pairs (a then b, then b then a, ...) after one warm-up of each: the
    median time of each and the median of the pairs' ratios a / b."""
    a(), b()
    ta, tb = [], []
    for i in range(n):
        for name, fn in ((("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))):
            began = time.perf_counter()
            fn()
            (ta if name == "a" else tb).append(time.perf_counter() - began)
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb),
            "ratio": statistics.median(x / y for x, y in zip(ta, tb)), "pairs": n}


def engine_rows(lesson_pairs: int, big_pairs: int) -> dict[str, Any]:
    engine_bench.CHECKED_LESSON = check_spec(engine_bench.LESSON)
    engine_bench.CHECKED_BIG = check_spec({"objective": "10 * (x ** 2).sum()",
                                           "x0": {"shape": [1_000_000], "init": "ones"}, "steps": 200,
                                           "record": {"every": 100}, "optimizer": {"name": "sgd", "lr": 0.001}})
    say(f"engine vs bare loop: lesson, {lesson_pairs} pairs ...")
    lesson = pairs(engine_bench.engine_lesson, engine_bench.bare_optim, lesson_pairs)
    say(f"  {lesson['ratio']:.3f}; 1,000,000-element parabola, {big_pairs} pairs ...")
    big = pairs(engine_bench.big_engine, engine_bench.big_bare, big_pairs)
    say(f"  {big['ratio']:.3f}")
    return {"lesson": lesson, "big": big}


# -- 4. history writes against a plain COPY ------------------------------------------------------

def engine_chunk_rows(spec: dict[str, Any], steps: int = 20_000) -> int:
    """The rows of the engine's chunks of ``spec`` on this machine (the median full chunk): how
    many a worker writes of such a job in one transaction."""
    from service.engine import run

    sizes: list[int] = []
    run(check_spec({**spec, "steps": steps}), on_chunk=lambda c: sizes.append(len(c.rows)))
    return int(statistics.median(sizes[:-1] or sizes))


def history_writes(rows: int, n_pairs: int) -> dict[str, Any]:
    from service.store import HistoryRows
    from service.store import jobs as job_store
    from service.store.history import save_chunk
    from testkit.backends import migrated

    rng = np.random.default_rng(0)
    steps = np.arange(rows)
    f, gn, lr, x = rng.standard_normal(rows) * 100, np.abs(rng.standard_normal(rows)), np.full(rows, 1e-3), \
        rng.standard_normal((rows, 2))
    spec = {"objective": "10 * (x ** 2).sum()", "x0": [8.0, 8.0], "steps": rows - 1,
            "optimizer": {"name": "sgd", "lr": 0.001}, "record": {"x": True}}
    chunk = engine_chunk_rows(spec)
    gen = migrated()
    db = next(gen)
    try:
        def new_job() -> str:
            job_id = job_store.create_job(db, spec, [2], "cpu")[0].id
            assert job_store.claim_job(db, job_id, "bench:1", 3600, 3) is not None
            return job_id

        def store_path(per_write: int = chunk) -> None:
            job_id = new_job()
            for first in range(0, rows, per_write):
                end = min(rows, first + per_write)
                batch = HistoryRows(steps=steps[first:end], f=f[first:end], grad_norm=gn[first:end],
                                     lr=lr[first:end], x=x[first:end])
                save_chunk(db, job_id, "bench:1", batch, None, None, 3600)

        plain_payloads: list[bytes] = []
        with db.session() as s:  # the one-row-per-step layout of revisions 0001-0016
            s.connection().exec_driver_sql(f"CREATE TABLE {BASELINE} {plain_copy.TABLE}")

        def copy_rows() -> None:
            payload = plain_payloads.pop()
            statement = f"COPY {BASELINE} ({plain_copy.COLUMNS}) FROM STDIN WITH (FORMAT binary)"
            raw = db.engine.raw_connection()
            try:
                driver = raw.driver_connection
                with driver.cursor() as cur, cur.copy(statement) as copy:
                    copy.write(payload)
                driver.commit()
            finally:
                raw.close()

        # besides the engine's chunks of this job, the same path in the engine's largest ones, where
        # the fixed cost of a transaction (lease renewal, overlap check, counters, commit) is shared
        # by the most rows
        runs: list[tuple[str, Any]] = [("store", store_path), ("copy", copy_rows),
                                       ("store_cap", lambda: store_path(CAP_WRITES))]
        times: dict[str, list[float]] = {name: [] for name, _ in runs}
        for i in range(n_pairs + 1):  # the first round warms every path up and is not counted
            plain_payloads.append(plain_copy.encode(new_job(), steps, f, gn, lr, x))
            order = runs[i % 3:] + runs[:i % 3]
            for name, fn in order:
                began = time.perf_counter()
                fn()
                if i:
                    times[name].append(time.perf_counter() - began)
        with db.session() as s:
            from sqlalchemy import text
            stored = s.execute(text(f"SELECT (SELECT count(*) FROM {BASELINE}) + "
                                    "(SELECT sum(n_rows) FROM history_chunks)")).scalar()
        assert stored == rows * 3 * (n_pairs + 1), stored
    finally:
        db.engine.dispose()
        gen.close()
    store_s, copy_s = statistics.median(times["store"]), statistics.median(times["copy"])
    return {"rows": rows, "chunk": chunk, "pairs": n_pairs, "store_s": store_s, "copy_s": copy_s,
            "store_rows_per_s": rows / store_s, "copy_rows_per_s": rows / copy_s,
            "ratio": statistics.median(b / a for a, b in zip(times["store"], times["copy"])),
            "cap_chunk": CAP_WRITES, "cap_rows_per_s": rows / statistics.median(times["store_cap"]),
            "cap_ratio": statistics.median(b / a for a, b in zip(times["store_cap"], times["copy"]))}


# -- 5. exports (benchmarks/history_export.py, in a process of its own) --------------------------

def exports(rows: int, repeat: int, points_repeat: int) -> dict[str, Any]:
    if not shutil.which("psql"):
        raise SystemExit("psql is not on PATH (the export baseline needs it)")
    out = subprocess.run([sys.executable, str(HERE / "history_export.py"), "--rows", str(rows), "--repeat",
                          str(repeat), "--points-repeat", str(points_repeat)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"history_export.py failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    for line in [*out.stdout.strip().splitlines()[:-1], *out.stderr.strip().splitlines()]:
        say("  " + line)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- 6. points against a page of as many rows (benchmarks/points.py, in a process of its own) -----

def points(rows: int, repeat: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(HERE / "points.py"), "--rows", str(rows), "--repeat", str(repeat)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"points.py failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    for line in out.stderr.strip().splitlines():
        say("  " + line)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- 7, 8. a big x, and liveness under load (each script in a process of its own) ----------------

def script_json(name: str, *args: str) -> Any:
    """The JSON line ``benchmarks/<name>`` prints last with ``--json``; its other output to stderr."""
    out = subprocess.run([sys.executable, str(HERE / name), *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    last = max(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    for line in lines[:last] + lines[last + 1:]:
        say("  " + line)
    return json.loads(lines[last])


# -- the table -----------------------------------------------------------------------------------

def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def table(m: dict[str, Any], r: dict[str, Any], sizes: dict[str, Any], quick: bool, workers: int,
          failed: dict[str, str] | None = None) -> str:
    lines = [f"Measured {m['date']} on `{m['host']}`: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; "
             f"torch {m['torch']}, Python {m['python']}, PostgreSQL {m['postgres']}"
             + (" — **--quick smoke run (small sizes), not the benchmark**" if quick else ""), "",
             "| measure | Descent | baseline | ratio | target |", "|---|---|---|---|---|"]
    def add(measure: str, ours: str, base: str, ratio: str, target: str) -> None:
        lines.append(f"| {measure} | {ours} | {base} | {ratio} | {target} |")

    for name in ("lesson", "big") if "engine" in r else ():
        e = r["engine"][name]
        what = ("lesson 2x2, 500 SGD steps, every row recorded" if name == "lesson"
                else "1,000,000-element parabola, 200 SGD steps, record.every 100")
        add(f"engine vs bare `torch.optim` loop, {what} (median of {e['pairs']} alternating pairs; ratio engine / bare)",
            fmt_s(e["a_s"]), fmt_s(e["b_s"]), f"{e['ratio']:.3f}×", f"≤ 1.1× ({verdict(e['ratio'] <= 1.1)})")
    if "sweep" in r:
        s = r["sweep"]
        add(f"sweep of {s['jobs']:,} jobs (Rosenbrock, 500 SGD steps, every 10th row; {s['rows']:,} rows stored, all "
            f"checked; from the POST until a poll of committed rows every {s['observe_poll_s'] * 1000:.0f} ms sees every "
            f"job finished) end to end through the API on PostgreSQL + Redis, "
            f"{plural(workers, 'worker')}, vs the same jobs submitted one at a time (a sample of {s['solo_jobs']}, mean "
            f"{s['solo_mean_s'] * 1000:.1f} ms/job, scaled to {s['jobs']:,}); ratio one-at-a-time / sweep",
            fmt_s(s["sweep_s"]), f"{fmt_s(s['solo_scaled_s'])} (scaled)", f"{s['ratio']:.1f}×",
            f"≥ 200× ({verdict(s['ratio'] >= 200)})")
    if "burst" in r:
        b = r["burst"]
        add(f"burst of {b['jobs']} independent {b['spec']} jobs by `POST /v1/jobs` ({b['threads']} client threads, "
            f"{plural(workers, 'worker')}): batching on (default `DESCENT_BATCH_MAX`) vs off (`DESCENT_BATCH_MAX=1`), "
            f"from the first submit until a poll of committed rows every {b['poll_s'] * 1000:.0f} ms sees every job "
            "finished; ratio off / on",
            fmt_s(b["on"]["wall_s"]), fmt_s(b["off"]["wall_s"]), f"{b['ratio']:.2f}×", f"≥ 5× ({verdict(b['ratio'] >= 5)})")
    if "writes" in r:
        w = r["writes"]
        add(f"history writes, {w['rows']:,} steps (2 parameters, x recorded): the store's write path (`save_chunk`, "
            f"the engine's chunks of this job, {w['chunk']:,} rows: what it records in 0.25 s here, each a transaction "
            "with the lease renewal, stored as chunks of steps) vs "
            "one plain binary `COPY` of the same rows, one row per step, into a table of the old `history` layout "
            f"(median of {w['pairs']} rounds taken in turn; ratio Descent steps/s / COPY rows/s; in "
            f"the engine's largest chunks, {w['cap_chunk']:,}-row transactions, the same path stores "
            f"{w['cap_rows_per_s']:,.0f} steps/s, {w['cap_ratio']:.2f}×)",
            f"{w['store_rows_per_s']:,.0f} steps/s", f"{w['copy_rows_per_s']:,.0f} rows/s", f"{w['ratio']:.2f}×",
            f"≥ 3× ({verdict(w['ratio'] >= 3)})")
    if "export" in r:
        x = r["export"]
        add(f"CSV export of a {x['rows']:,}-row history through the API vs `psql` `COPY (...) TO STDOUT WITH CSV` "
            f"(median of {sizes['export_repeat']}; ratio API / psql)",
            fmt_s(x["csv_s"]), fmt_s(x["psql_s"]), f"{x['csv_ratio']:.2f}×", f"≤ 2× ({verdict(x['csv_ratio'] <= 2)})")
        p = x.get("points_1000_ms")
        add(f"`?points=1000` (JSON) on that {x['rows']:,}-row history, median of {sizes['points_repeat']} requests",
            f"{p:.1f} ms" if p is not None else "failed", "—", "—", f"< 200 ms ({verdict(p is not None and p < 200)})")
    if "points" in r:
        w, g = r["points"]["worst"]["wide"], r["points"]["worst"]["long"]
        ok = w["points_ms"] < 100 and g["points_ms"] < 100
        add(f"`?points=1000` (JSON, whole body) on a 5,000-step 100-parameter job / on a {g['rows'] - 1:,}-step "
            f"2-parameter job, vs a plain page of 1,000 rows of the same job (`?limit=1000`); median of "
            f"{w['repeat']} alternating requests, the worse of right after the writes and after `VACUUM ANALYZE`; "
            "ratio points / page",
            f"{w['points_ms']:.1f} ms / {g['points_ms']:.1f} ms", f"{w['page_ms']:.1f} ms / {g['page_ms']:.1f} ms",
            f"{w['ratio']:.2f}× / {g['ratio']:.2f}×", f"< 100 ms each ({verdict(ok)})")
    if "big_x" in r:
        x = r["big_x"]
        for backend, label in (("embedded", "embedded"), ("postgres", "PostgreSQL + Redis")):
            b = x[backend]
            budget = 3 * b["bare_s"] + 0.5
            ok = (b["finished_s"] <= budget and b["doc_s"] < 0.05 and b["doc_bytes"] < 20_000 and b["npy_s"] < 0.5
                  and b["exact"] and b["upload_same"])
            add(f"a {x['numel']:,}-element job, {x['steps']} SGD steps, {label}: POST to finished as `?wait` sees it "
                f"vs the bare `torch.optim` loop (median of {x['repeat']}); `GET /v1/jobs/ID` "
                f"{b['doc_s'] * 1000:.1f} ms, {b['doc_bytes'] / 1000:.1f} KB; x as .npy {b['npy_s'] * 1000:.0f} ms, "
                f"bit-exact {b['exact']}; x0 uploaded as .npy: same x {b['upload_same']}; ratio service / bare",
                fmt_s(b["finished_s"]), fmt_s(b["bare_s"]), f"{b['finished_s'] / b['bare_s']:.2f}×",
                f"≤ 3× + 0.5 s, GET < 50 ms and 20 KB, .npy < 0.5 s ({verdict(ok)})")
    if "health" in r:
        phases = {row["phase"]: row for row in r["health"]}
        idle, loaded = phases["idle"], r["health"][-1]
        p99 = loaded["/healthz"][1]
        add(f"`/healthz` p99 while {loaded['phase']} load the API (embedded; a fresh connection every 20 ms; "
            f"`/readyz` p99 {loaded['/readyz'][1]:.0f} ms) vs the idle API; ratio loaded / idle",
            f"{p99:.0f} ms", f"{idle['/healthz'][1]:.0f} ms", f"{p99 / idle['/healthz'][1]:.1f}×",
            f"< 250 ms, goal 100 ({verdict(p99 < 250)})")
    for name, why in (failed or {}).items():
        lines.append(f"| {name}: **failed** ({why.replace('|', '/')}) | — | — | — | — |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run at small sizes (a few minutes)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the sweep and the burst")
    parser.add_argument("--only", default="engine,sweep,burst,writes,export,points,big_x,health",
                        help="comma-separated subset of engine,sweep,burst,writes,export,points,big_x,health")
    parser.add_argument("--json", action="store_true", help="also print every measurement as one JSON line")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    began = time.perf_counter()
    m = machine()
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}

    def piece(name: str, what: str, fn: Callable[[], Any]) -> None:
        """Measure one row; a failure is reported in the table and the other rows still run."""
        if name not in only:
            return
        say(what)
        try:
            results[name] = fn()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported, and the exit status says so
            text = str(exc).strip()
            lines = text.splitlines() or [""]
            failed[name] = f"{type(exc).__name__}: {lines[0][:200]}" + (f" … {lines[-1][:200]}" if len(lines) > 1 else "")
            say(f"  FAILED: {text[-3000:]}")

    piece("engine", "engine ...", lambda: engine_rows(sizes["lesson_pairs"], sizes["big_pairs"]))
    piece("writes", f"history writes: {sizes['write_rows']:,} rows, {sizes['write_pairs']} pairs ...",
          lambda: history_writes(sizes["write_rows"], sizes["write_pairs"]))
    if "writes" in results:
        say(f"  store {results['writes']['store_rows_per_s']:,.0f} steps/s, COPY {results['writes']['copy_rows_per_s']:,.0f} "
            f"rows/s in {results['writes']['chunk']:,}-row chunks: {results['writes']['ratio']:.2f}x; in "
            f"{results['writes']['cap_chunk']:,}-row ones {results['writes']['cap_rows_per_s']:,.0f} steps/s, "
            f"{results['writes']['cap_ratio']:.2f}x")
    piece("export", f"exports: {sizes['export_rows']:,} rows ...",
          lambda: exports(sizes["export_rows"], sizes["export_repeat"], sizes["points_repeat"]))
    piece("points", f"points: 5,001 rows x 100 and {sizes['points_rows']:,} rows x 2 ...",
          lambda: points(sizes["points_rows"], sizes["points_repeat"]))
    piece("big_x", "a 1,000,000-element job ...",
          lambda: script_json("big_x.py", "--repeat", "1" if args.quick else "3",
                              *(["--numel", "100000"] if args.quick else [])))
    piece("health", "/healthz under load ...", lambda: script_json("health_load.py", *(["--quick"] if args.quick else [])))
    piece("burst", f"burst: {sizes['burst_jobs']} jobs, batching off then on ...",
          lambda: burst_bench.measure(sizes["burst_jobs"], args.workers, log=say))
    piece("sweep", f"sweep: {sizes['sweep_jobs']:,} jobs, one-at-a-time sample of {sizes['solo']} ...",
          lambda: sweep_bench.measure(sizes["sweep_jobs"], sizes["solo"], args.workers, log=say))
    say(f"done in {time.perf_counter() - began:.0f} s")
    print(table(m, results, sizes, args.quick, args.workers, failed))
    if args.json:
        print(json.dumps({"machine": m, "quick": args.quick, "sizes": sizes, **results, "failed": failed}))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
