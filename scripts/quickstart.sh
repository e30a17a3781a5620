#!/usr/bin/env bash
# Quick start: install the tap and Meltano inside this checkout, then run the main job.
# With TAP_STRIPE_CONNECT_API_KEY set it reads that Stripe account; without it, it starts
# the local Stripe emulator with generated data and reads from there (and says so).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
[ -x .venv-meltano/bin/meltano ] || {
  "$PYTHON" -m venv .venv-meltano
  .venv-meltano/bin/python -m pip install --quiet 'meltano>=4,<5'
}
MELTANO=.venv-meltano/bin/meltano
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false

EMULATOR_PID=""
cleanup() { [ -n "$EMULATOR_PID" ] && kill "$EMULATOR_PID" 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${TAP_STRIPE_CONNECT_API_KEY:-}" ]; then
  PORT="${EMULATOR_PORT:-12111}"
  echo "TAP_STRIPE_CONNECT_API_KEY is not set: using the local Stripe emulator on port $PORT with generated data."
  .venv/bin/python -m tests.emulator --port "$PORT" --objects "${EMULATOR_OBJECTS:-500}" --seed 7 &
  EMULATOR_PID=$!
  for _ in $(seq 50); do
    .venv/bin/python -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
    sleep 0.2
  done
  export TAP_STRIPE_CONNECT_API_KEY=sk_test_emulator
  export TAP_STRIPE_CONNECT_API_URL="http://127.0.0.1:$PORT"
fi

$MELTANO install --clean >/dev/null
$MELTANO run tap-stripe-connect target-jsonl
echo "Records per stream (output/*.jsonl):"
wc -l output/*.jsonl
