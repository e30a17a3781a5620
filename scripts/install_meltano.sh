#!/usr/bin/env bash
# Install Meltano into .venv-meltano (once) and the project's plugins into .meltano/.
#   bash scripts/install_meltano.sh                      # every plugin in meltano.yml
#   bash scripts/install_meltano.sh tap-stripe-connect target-duckdb
#   bash scripts/install_meltano.sh dbt-duckdb dbt-postgres   # the analytics/ utilities
# Used by scripts/quickstart.sh and by the pipeline tests (tests/test_pipelines.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if [ ! -x .venv-meltano/bin/meltano ]; then
  echo "Installing Meltano into .venv-meltano ..." >&2
  rm -rf .venv-meltano
  "$PYTHON" -m venv .venv-meltano
  quiet .venv-meltano/bin/python -m pip install --upgrade pip
  quiet .venv-meltano/bin/python -m pip install 'meltano>=4,<5'
fi
echo "Installing Meltano plugins ${*:-(all)} into .meltano ..." >&2
quiet .venv-meltano/bin/meltano install "$@"
