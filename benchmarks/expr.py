"""How long the objective language takes to refuse each case of the hostile corpus.

    python benchmarks/expr.py [--repeats 5]

Each case is parsed and, if parsing lets it through, traced on a meta tensor, as a submission
is; the figure per case is its slowest repeat. Target: every case under 100 ms. (torch's meta
kernels load on first use; that one-time cost is paid once before timing, as the API does at
start-up.)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.expr import ExpressionError, check_on_shape, parse, warm_up  # noqa: E402
from testkit.corpus import HOSTILE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warm_up()
    worst: list[tuple[float, str]] = []
    for text in HOSTILE:
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            try:
                check_on_shape(parse(text), (2, 2))
                raise SystemExit(f"accepted: {text[:60]!r}")
            except ExpressionError:
                pass
            times.append(time.perf_counter() - began)
        worst.append((max(times), text))
    worst.sort(reverse=True)
    print(f"{len(HOSTILE)} hostile cases, all refused; slowest repeat per case: "
          f"median {statistics.median(t for t, _ in worst) * 1e3:.2f} ms, max {worst[0][0] * 1e3:.2f} ms "
          f"(target < 100 ms)")
    for t, text in worst[:3]:
        print(f"  {t * 1e3:7.2f} ms  {text[:60]!r}{'...' if len(text) > 60 else ''}")


if __name__ == "__main__":
    main()
