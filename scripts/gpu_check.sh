#!/usr/bin/env bash
# The GPU check: the embedded service with a CPU worker and a GPU worker, the lesson's five cases
# compared across devices, a 10,000-start batched sweep and the 1,000,000-element parabola on each
# device, steps per second; exit status 1 on any FAIL (scripts/gpu_check.py says what it checks).
#
#   scripts/gpu_check.sh                 # here: .venv's Python; without CUDA, the CPU half only
#   PYTHON=python3 scripts/gpu_check.sh  # a machine with its own CUDA torch and no network
#   scripts/gpu_check.sh --fake-gpu      # tests the GPU half's plumbing without CUDA (CPU numbers)
#
# On a Python that lacks any of the service's runtime packages, or holds one at a version that does
# not fit (scripts/gpu_deps.py check: the whole closure of pyproject's dependencies, and an import
# of every module of service/ and workers/ and of what gpu_check.py and its processes import), it
# installs the wheels in .whl/ (or $WHEELS; scripts/fetch_gpu_wheels.sh fetches them) into a
# temporary folder, then from $WHEELS/fallback/ those of the machine's own packages that still do not
# fit; never torch or numpy: the machine's own torch runs the jobs. The project runs from this
# checkout (PYTHONPATH), not installed. On the lent GPU machine (carry .whl):
#   PYTHON=python3 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}  # relative to the checkout's root, or absolute

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
pip_install() {  # pip_install TARGET WHEEL...
  local target=$1; shift
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
    --target "$target" "$@"
}
if ! missing=$("$PYTHON" scripts/gpu_deps.py check 2>/dev/null); then
  echo "gpu_check: $PYTHON lacks the service's packages or holds unfit ones${missing:+ (}$(echo $missing | tr ' ' ',')${missing:+)}"
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: $WHEELS holds no wheels (scripts/fetch_gpu_wheels.sh)" >&2
    exit 2
  fi
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/descent-site.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  pip_install "$tmp/site" "$WHEELS"/*.whl
  export PYTHONPATH="$tmp/site:$PYTHONPATH"
  echo "gpu_check: installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $tmp/site"
  # The machine's own packages that are missing or do not fit what the wheels ask for.
  if ! fallback=$("$PYTHON" scripts/gpu_deps.py check --fallback "$WHEELS/fallback" 2>/dev/null) && [ -n "$fallback" ]; then
    # shellcheck disable=SC2086
    pip_install "$tmp/fallback" $fallback
    export PYTHONPATH="$tmp/fallback:$PYTHONPATH"
    echo "gpu_check: installed from $WHEELS/fallback, missing or unfit here: $(for w in $fallback; do basename "$w"; done | paste -sd' ')"
  fi
  if ! "$PYTHON" scripts/gpu_deps.py check >/dev/null; then
    echo "gpu_check: $PYTHON still cannot run the service (above); carry the wheels it names" >&2
    exit 2
  fi
fi
"$PYTHON" scripts/gpu_check.py "$@"
