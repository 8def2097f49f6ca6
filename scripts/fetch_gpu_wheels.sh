#!/usr/bin/env bash
# Fetch, into .whl/ (ignored), the wheels scripts/gpu_check.sh installs on a machine that has its
# own CUDA torch but none of the service's other runtime packages and no network: CPython 3.12,
# manylinux x86_64, each pinned to the version in this checkout's .venv.
#
# Left out on purpose: torch and its own needs, numpy, and matplotlib with its needs (such a
# machine brings its own, and the service runs on whatever torch it finds).
#
#   scripts/fetch_gpu_wheels.sh            # needs the network and .venv (make install)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DEST=${DEST:-.whl}
# The runtime closure of pyproject's dependencies (celery[redis], psycopg[binary]) without the
# packages named above.
PACKAGES=(
  alembic amqp annotated-types billiard blinker celery certifi charset-normalizer click
  click-didyoumean click-plugins click-repl flask idna itsdangerous jinja2 kombu mako markupsafe
  prompt-toolkit psycopg psycopg-binary pydantic pydantic-core python-dateutil redis requests six
  sqlalchemy typing-extensions typing-inspection tzlocal urllib3 vine waitress wcwidth werkzeug
)

pins=$("$PYTHON" - "${PACKAGES[@]}" <<'PY'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        sys.exit(f"{name} is not installed in {sys.executable}; run `make install` first")
PY
)

rm -rf "$DEST"
mkdir -p "$DEST"
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" $pins
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1), in $DEST/"
