"""How long admission takes to refuse each case of the hostile corpus.

    python benchmarks/expr.py [--repeats 5]

Each case goes through the whole admission path, ``check_spec`` on a spec with that objective and
an x0 of the case's shape, as a submission does: the string checks, parsing, the meta trace of
the objective and its gradient, and the memory estimate. The remembered checks are forgotten
before every repeat, so each is timed from scratch. The figure per case is its slowest repeat.
Target: every case under 100 ms. (torch's meta kernels load on first use; that one-time cost is
paid once before timing, as the API does at start-up.)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.expr import warm_up  # noqa: E402
from service.spec import SpecError, check_spec  # noqa: E402
from service.spec.validate import forget_cached_checks  # noqa: E402
from testkit.corpus import HOSTILE, Case  # noqa: E402


def refusal_seconds(case: Case) -> float:
    """Seconds ``check_spec`` takes to refuse the case, from cold caches; exits if it accepts it."""
    spec = {"objective": case.text, "x0": {"shape": list(case.shape), "init": "zeros"}, "steps": 1}
    forget_cached_checks()
    began = time.perf_counter()
    try:
        check_spec(spec)
    except SpecError as exc:
        if not 400 <= exc.status < 500:
            raise SystemExit(f"refused with status {exc.status}: {case.text[:60]!r}") from None
        return time.perf_counter() - began
    raise SystemExit(f"accepted: {case.text[:60]!r} on shape {list(case.shape)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warm_up()
    check_spec({"objective": "sum(x)", "x0": [1.0]})  # the optimiser's first construction, also once
    worst = sorted(((max(refusal_seconds(case) for _ in range(args.repeats)), case) for case in HOSTILE),
                   key=lambda pair: pair[0], reverse=True)
    print(f"{len(HOSTILE)} hostile cases, all refused; slowest repeat per case: "
          f"median {statistics.median(t for t, _ in worst) * 1e3:.2f} ms, max {worst[0][0] * 1e3:.2f} ms "
          f"(target < 100 ms)")
    for t, case in worst[:3]:
        text = case.text
        print(f"  {t * 1e3:7.2f} ms  {text[:60]!r}{'...' if len(text) > 60 else ''} on {list(case.shape)}")


if __name__ == "__main__":
    main()
