#!/usr/bin/env bash
# Fuzz the live API with Schemathesis (issue 9, "Fuzzed in CI").
#
# Starts a private API on an embedded backend (SQLite + the SQL broker, or FUZZ_DATABASE_URL) in a temporary data dir,
# on a free loopback port, and runs every Schemathesis check against its /openapi.json with an
# admin token, on a fixed seed and a bounded budget: 150 test cases per operation (about 2,500
# requests in about 45 s on 2 cores), Schemathesis cut off at 170 s, at least 1,000 requests.
# No worker runs: submitted jobs stay queued, which is all the API needs.
#
# Exit status: Schemathesis's (non-zero on any failure or if it overruns its time), or 1 if the
# API does not come up or fewer than 1,000 requests were sent.
# FUZZ_REPORT_DIR=DIR keeps Schemathesis's reports there (fuzz-junit.xml, fuzz-har.json: every
# request and response); by default they go with the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
CONFIG="scripts/schemathesis.toml"   # the checks, seed and budget; read it for the exclusions
# FUZZ_MAX_EXAMPLES=N overrides the config's test cases per operation (a short pass); the
# requests it must send scale with it (1,000 at the config's 150).
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-}"
MIN_REQUESTS=$(( ${MAX_EXAMPLES:-150} * 1000 / 150 ))

# Only this script's settings: the private API must not pick up a real database, broker or auth.
for name in $(env | sed -n 's/^\(DESCENT_[A-Z_]*\)=.*/\1/p'); do unset "$name"; done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/descent-fuzz.XXXXXX")"
export DESCENT_DATA_DIR="$WORK/data"
# FUZZ_DATABASE_URL=URL (an empty database) fuzzes the API on that database instead of SQLite:
# some inputs fail only on PostgreSQL (it cannot store or compare text holding a NUL).
if [[ -n "${FUZZ_DATABASE_URL:-}" ]]; then
  export DESCENT_DATABASE_URL="$FUZZ_DATABASE_URL"
fi
API_PID=""
cleanup() {
  if [[ -n "$API_PID" ]] && kill -0 "$API_PID" 2>/dev/null; then
    kill "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
PORT="$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
"$BIN/descent" db upgrade >/dev/null

export DESCENT_AUTH=required
TOKEN="$("$BIN/descent" tokens create --owner fuzz --admin | tail -1)"
[[ -n "$TOKEN" ]] || { echo "fuzz: 'descent tokens create' printed no token" >&2; exit 1; }
echo "fuzz: DESCENT_AUTH=required, admin token for owner 'fuzz'"

"$BIN/descent" api --host 127.0.0.1 --port "$PORT" >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 150); do
  if "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$BASE/healthz" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$API_PID" 2>/dev/null; then
    echo "fuzz: the API exited before answering /healthz:" >&2; cat "$WORK/api.log" >&2; exit 1
  fi
  sleep 0.2
done
"$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$BASE/healthz" \
  || { echo "fuzz: the API did not answer /healthz within 30 s:" >&2; cat "$WORK/api.log" >&2; exit 1; }
echo "fuzz: API up on $BASE after $((SECONDS - started)) s (data dir $DESCENT_DATA_DIR)"

# Every check runs (see $CONFIG), ignored_auth among them: requests without the token must be 401s.
args=(run "$BASE/openapi.json" --no-color -H "Authorization: Bearer $TOKEN")
[[ -n "$MAX_EXAMPLES" ]] && args+=(--max-examples "$MAX_EXAMPLES")
# FUZZ_PHASES=examples,fuzzing,... runs only those of Schemathesis's phases (a short pass).
[[ -n "${FUZZ_PHASES:-}" ]] && args+=(--phases "$FUZZ_PHASES")
REPORT_DIR="${FUZZ_REPORT_DIR:-$WORK/report}"
args+=(--report junit,har --report-junit-path "$REPORT_DIR/fuzz-junit.xml"
      --report-har-path "$REPORT_DIR/fuzz-har.json")
mkdir -p "$REPORT_DIR"
rm -f "$REPORT_DIR/fuzz-junit.xml" "$REPORT_DIR/fuzz-har.json"

# Hypothesis keeps its files with the run, not in the checkout.
export HYPOTHESIS_STORAGE_DIRECTORY="$WORK/hypothesis"
shown=("${args[@]}")
shown=("${shown[@]//$TOKEN/\$TOKEN}")
echo "fuzz: $BIN/schemathesis --config-file $CONFIG ${shown[*]}"
status=0
# The whole step stays under 3 minutes: Schemathesis gets what is left of 170 s.
timeout --kill-after=5 "$((170 - (SECONDS - started)))" "$BIN/schemathesis" --config-file "$CONFIG" "${args[@]}" || status=$?
if [[ "$status" -eq 124 || "$status" -eq 137 ]]; then
  echo "fuzz: Schemathesis ran out of its time budget (170 s for the whole step)" >&2
fi

# Requests sent, from the HAR report (Schemathesis's summary counts test cases, not requests).
requests="$("$BIN/python" - "$REPORT_DIR/fuzz-har.json" <<'PY'
import json, sys
try:
    print(len(json.load(open(sys.argv[1]))["log"]["entries"]))
except (OSError, ValueError, KeyError):
    print(0)
PY
)"
echo "fuzz: schemathesis exit status $status, $requests requests, $((SECONDS - started)) s wall"
if [[ "$status" -eq 0 && "$requests" -lt "$MIN_REQUESTS" ]]; then
  echo "fuzz: only $requests requests, under the $MIN_REQUESTS this step promises" >&2
  status=1
fi
if [[ "$status" -ne 0 ]]; then
  echo "fuzz: API log (last 40 lines):"; tail -40 "$WORK/api.log"
fi
exit "$status"
