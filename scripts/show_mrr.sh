#!/usr/bin/env bash
# MRR by month and its movements from the dbt models in a DuckDB file: a table in the
# terminal and a PNG chart (scripts/show_mrr.py). duckdb and matplotlib go into
# .venv-analytics (once); duckdb stays on target-duckdb's 1.2.x to read its file.
#   bash scripts/show_mrr.sh warehouse.duckdb [--image mrr.png]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if ! .venv-analytics/bin/python -c "import duckdb, matplotlib" 2>/dev/null; then
  echo "Installing duckdb and matplotlib into .venv-analytics ..." >&2
  rm -rf .venv-analytics
  "$PYTHON" -m venv .venv-analytics
  quiet .venv-analytics/bin/python -m pip install --upgrade pip
  quiet .venv-analytics/bin/python -m pip install 'duckdb==1.2.2' 'matplotlib==3.10.3'
fi
exec .venv-analytics/bin/python scripts/show_mrr.py "$@"
