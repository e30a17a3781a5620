#!/usr/bin/env bash
# Install the tap with its development tools (and the Dagster extra, for
# tests/test_dagster.py) into .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,dagster]'
exec .venv/bin/python -m pytest "$@"
