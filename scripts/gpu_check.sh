#!/usr/bin/env bash
# The GPU check: the embedded service with a CPU worker and a GPU worker, the lesson's five cases
# compared across devices, a 10,000-start batched sweep and the 1,000,000-element parabola on each
# device, steps per second; exit status 1 on any FAIL (scripts/gpu_check.py says what it checks).
#
#   scripts/gpu_check.sh                 # here: .venv's Python; without CUDA, the CPU half only
#   PYTHON=python3 scripts/gpu_check.sh  # a machine with its own CUDA torch and no network
#   scripts/gpu_check.sh --fake-gpu      # tests the GPU half's plumbing without CUDA (CPU numbers)
#
# On a Python without the service's packages (Flask, Celery, SQLAlchemy, ...) it installs the
# wheels in .whl/ (or $WHEELS; scripts/fetch_gpu_wheels.sh fetches them) into a temporary folder,
# never torch or numpy: the machine's own torch runs the jobs. The project runs from this checkout
# (PYTHONPATH), not installed. On the lent GPU machine (carry .whl):
#   PYTHON=python3 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}  # relative to the checkout's root, or absolute

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import flask, celery, kombu, sqlalchemy, alembic, pydantic, waitress, psycopg' 2>/dev/null; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: $PYTHON lacks the service's packages and $WHEELS holds no wheels (scripts/fetch_gpu_wheels.sh)" >&2
    exit 2
  fi
  site=$(mktemp -d "${TMPDIR:-/tmp}/descent-site.XXXXXX")
  trap 'rm -rf "$site"' EXIT
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" scripts/gpu_check.py "$@"
