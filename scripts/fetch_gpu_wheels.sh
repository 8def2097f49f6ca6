#!/usr/bin/env bash
# Fetch, into .whl/, the wheels scripts/gpu_check.sh installs on a machine that has its own CUDA
# torch and numpy but none of the service's other runtime packages, and no network: CPython 3.12
# (the nvidia-h200 machine's 3.12.3), manylinux x86_64, each pinned to the version in this
# checkout's .venv.
#
# Which ones, scripts/gpu_deps.py says (`pins`): the runtime closure of pyproject's dependencies
# (with extras: celery[redis], psycopg[binary]) less the packages the machine brings, as
# /work/.library/device/KINDS.md lists them (gpu_deps.MACHINE_HAS: torch, numpy, matplotlib and its
# needs, requests, prometheus-client, click, werkzeug, jinja2, ...). The machine's copies of those
# are used; where one does not fit the closure's version (say typing-extensions older than pydantic
# asks for), gpu_check.sh installs the same package from .whl/fallback/, fetched here too (never
# torch or numpy).
#
#   scripts/fetch_gpu_wheels.sh                           # needs the network and .venv (make install)
#   scripts/fetch_gpu_wheels.sh --python-version 3.11.7   # for another CPython (or PY_VERSION=...)
#   DEST=/tmp/wheels scripts/fetch_gpu_wheels.sh          # elsewhere than .whl/ (emptied first)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DEST=${DEST:-.whl}
PY_VERSION=${PY_VERSION:-3.12.3}
while [ $# -gt 0 ]; do
  case $1 in
    --python-version) PY_VERSION=${2:?--python-version X.Y[.Z]}; shift 2 ;;
    --python-version=*) PY_VERSION=${1#*=}; shift ;;
    *) echo "fetch_gpu_wheels: unknown argument $1" >&2; exit 2 ;;
  esac
done

pins=$("$PYTHON" scripts/gpu_deps.py pins --python-version "$PY_VERSION")
carry=$(sed -n 's/^carry //p' <<<"$pins")
fallback=$(sed -n 's/^fallback //p' <<<"$pins")

rm -rf "$DEST"
mkdir -p "$DEST/fallback"
download() {  # download DIR PINS...
  local dir=$1; shift
  [ $# -gt 0 ] || return 0
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" "$@"
}
# shellcheck disable=SC2086
download "$DEST" $carry
# shellcheck disable=SC2086
download "$DEST/fallback" $fallback
echo "$(ls "$DEST"/*.whl | wc -l) wheels and $(ls "$DEST"/fallback/*.whl 2>/dev/null | wc -l) fallback wheels" \
  "for CPython $PY_VERSION, $(du -sh "$DEST" | cut -f1), in $DEST/"
