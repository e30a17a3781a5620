#!/usr/bin/env bash
# The documentation site (mkdocs.yml, docs/), with MkDocs and its Material theme from the
# `docs` extra (installed into .venv):
#
#   bash scripts/docs.sh          # build it strictly into site/, then serve it on http://127.0.0.1:8000
#   bash scripts/docs.sh build    # only build it (CI): a broken link or a missing page fails
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -c 'import mkdocs, material' 2>/dev/null \
  || quiet .venv/bin/python -m pip install -e '.[docs]'
# (not --quiet: MkDocs then stops counting warnings, and --strict lets a broken link pass)
.venv/bin/python -m mkdocs build --strict
echo "docs: built into site/ ($(find site -name '*.html' | wc -l | tr -d ' ') pages)"
if [ "${1:-serve}" = serve ]; then
  exec .venv/bin/python -m mkdocs serve --strict --dev-addr "${DOCS_ADDRESS:-127.0.0.1:8000}"
fi
