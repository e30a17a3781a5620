#!/usr/bin/env bash
# Install Meltano into .venv-meltano (once) and the project's plugins into .meltano/.
#   bash scripts/install_meltano.sh                      # every plugin in meltano.yml
#   bash scripts/install_meltano.sh tap-stripe-connect target-duckdb
# Used by scripts/quickstart.sh and by the pipeline tests (tests/test_pipelines.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false

# Run a command quietly; show its output only when it fails.
quiet() {
  local log status=0
  log="$(mktemp)"
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" != 0 ]; then cat "$log" >&2; echo "failed: $*" >&2; fi
  rm -f "$log"
  return "$status"
}

if [ ! -x .venv-meltano/bin/meltano ]; then
  echo "Installing Meltano into .venv-meltano ..." >&2
  rm -rf .venv-meltano
  "$PYTHON" -m venv .venv-meltano
  quiet .venv-meltano/bin/python -m pip install --upgrade pip
  quiet .venv-meltano/bin/python -m pip install 'meltano>=4,<5'
fi
echo "Installing Meltano plugins ${*:-(all)} into .meltano ..." >&2
quiet .venv-meltano/bin/meltano install "$@"
