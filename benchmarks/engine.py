"""Engine overhead against the lesson's own loops, as ratios measured in the same run.

    python benchmarks/engine.py [--repeats 9]

1. The lesson's 2x2 problem, 500 SGD steps, every row recorded: engine / bare optim loop,
   engine / manual update loop, engine / the lesson's recording loop (clone x, .item() f).
2. A 1,000,000-element parabola, record.every = 100: engine / bare loop.
3. Peak resident memory of a 1,000,000-step run on 2 parameters, history streamed in chunks
   (measured in a child process, against the same child's memory before the run).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from service.engine import run  # noqa: E402
from service.spec import check_spec  # noqa: E402

torch.set_num_threads(1)
LESSON = {"objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w", "x0": [[5, 10], [1, 2]],
          "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}}


def bare_optim(steps: int = 500) -> None:
    w = torch.tensor([[5.0, 10.0], [1.0, 2.0]], requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.001)
    for _ in range(steps):
        opt.zero_grad()
        f = torch.log(torch.log(w + 7)).prod()
        f.backward()
        opt.step()


def bare_manual(steps: int = 500) -> None:
    w = torch.tensor([[5.0, 10.0], [1.0, 2.0]], requires_grad=True)
    for _ in range(steps):
        f = torch.log(torch.log(w + 7)).prod()
        f.backward()
        w.data -= 0.001 * w.grad
        w.grad.zero_()


def recording(steps: int = 500) -> None:
    w = torch.tensor([[5.0, 10.0], [1.0, 2.0]], requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.001)
    var_history, fn_history = [], []
    for _ in range(steps + 1):
        opt.zero_grad()
        f = torch.log(torch.log(w + 7)).prod()
        f.backward()
        var_history.append(w.data.clone())
        fn_history.append(f.item())
        opt.step()


def engine_lesson() -> None:
    rows = []
    run(CHECKED_LESSON, on_chunk=rows.append)


def big_bare(steps: int = 200) -> None:
    x = torch.full((1_000_000,), 8.0, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.001)
    for _ in range(steps):
        opt.zero_grad()
        f = 10 * (x ** 2).sum()
        f.backward()
        opt.step()


def big_engine() -> None:
    run(CHECKED_BIG, on_chunk=lambda c: None)


def median_time(fn: Callable[[], None], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median per function, alternating them so machine noise hits all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {k: statistics.median(v) for k, v in times.items()}


MEMORY_CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from service.engine import run
from service.spec import check_spec
spec = check_spec({{"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 1_000_000,
                    "optimizer": {{"name": "sgd", "lr": 0.0001}}}})
run(check_spec({{"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 10}}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = [0]
def sink(chunk):
    rows[0] += len(chunk.rows)
result = run(spec, on_chunk=sink)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, rows[0], result.steps)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    global CHECKED_LESSON, CHECKED_BIG
    CHECKED_LESSON = check_spec(LESSON)
    CHECKED_BIG = check_spec({"objective": "10 * (x ** 2).sum()", "x0": {"shape": [1_000_000], "init": "ones"},
                              "steps": 200, "record": {"every": 100}, "optimizer": {"name": "sgd", "lr": 0.001}})

    t = interleaved({"engine": engine_lesson, "bare": bare_optim, "manual": bare_manual,
                     "recording": recording}, args.repeats)
    print("lesson 2x2, 500 SGD steps, every row recorded (median of %d):" % args.repeats)
    for k, v in t.items():
        print(f"  {k:10s} {v * 1e3:8.2f} ms  ({v / 500 * 1e6:6.1f} us/step)")
    print(f"  engine / bare optim loop      = {t['engine'] / t['bare']:.3f}  (target <= 1.25)")
    print(f"  engine / manual update loop   = {t['engine'] / t['manual']:.3f}")
    print(f"  engine / lesson recording loop = {t['engine'] / t['recording']:.3f}  (target <= 1.0)")

    reps = max(3, args.repeats // 3)
    big = interleaved({"engine": big_engine, "bare": big_bare}, reps)
    print(f"1,000,000-element parabola, 200 steps, record.every=100 (median of {reps}):")
    print(f"  engine {big['engine'] * 1e3:.1f} ms, bare {big['bare'] * 1e3:.1f} ms, "
          f"ratio = {big['engine'] / big['bare']:.3f}  (target <= 1.1)")

    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD.format(root=root)], capture_output=True, text=True, check=True)
    before, after, rows, steps = (int(v) for v in out.stdout.split())
    print(f"1,000,000-step run on 2 parameters: {rows:,} rows streamed, {steps:,} steps; "
          f"peak RSS {after / 1024:.1f} MiB, growth during the run {(after - before) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
