#!/usr/bin/env bash
# Quick start: install the tap and Meltano inside this checkout, then load Stripe into a
# local DuckDB file with `meltano run tap-stripe-connect target-duckdb` and print the row
# count of every table.
#
# With TAP_STRIPE_CONNECT_API_KEY set it reads that Stripe account into warehouse.duckdb
# (run it again and it syncs incrementally from the state Meltano kept). Without it, it
# starts the local Stripe emulator with generated data and loads that into
# warehouse-emulator.duckdb instead, afresh on every run, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
started=$SECONDS

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Python 3.10 or later: the interpreter of .venv when it exists, else $PYTHON.
py="$PYTHON"
[ -x .venv/bin/python ] && py=.venv/bin/python
version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "quickstart: tap-stripe-connect needs Python 3.10 or later, and $py is ${version:-not a Python I can run}: install one, then run PYTHON=python3.12 bash scripts/quickstart.sh (delete .venv if it was made by an older Python)." >&2
  exit 1
fi

echo "==> Installing the tap into .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
quiet .venv/bin/python -m pip install --upgrade pip
quiet .venv/bin/python -m pip install -e .

echo "==> Installing Meltano (.venv-meltano) with tap-stripe-connect and target-duckdb (.meltano)"
bash scripts/install_meltano.sh tap-stripe-connect target-duckdb
MELTANO=.venv-meltano/bin/meltano

EMULATOR_PID=""
EMULATOR_LOG=""
cleanup() {
  if [ -n "$EMULATOR_PID" ]; then kill "$EMULATOR_PID" 2>/dev/null || true; fi
  if [ -n "$EMULATOR_LOG" ]; then rm -f "$EMULATOR_LOG"; fi
}
trap cleanup EXIT

# A plain string, not an array: macOS's bash 3.2 calls an empty array unbound under `set -u`.
RUN_ARGS=""
if [ -z "${TAP_STRIPE_CONNECT_API_KEY:-}" ]; then
  OBJECTS="${EMULATOR_OBJECTS:-500}"
  echo "==> TAP_STRIPE_CONNECT_API_KEY is not set: reading the LOCAL STRIPE EMULATOR with" \
       "generated data ($OBJECTS objects per stream), not a Stripe account."
  echo "    Set TAP_STRIPE_CONNECT_API_KEY=sk_test_... (or rk_...) to load your own account."
  EMULATOR_LOG="$(mktemp)"
  .venv/bin/python -m tests.emulator --port 0 --objects "$OBJECTS" --seed 7 --varied-pricing >"$EMULATOR_LOG" 2>&1 &
  EMULATOR_PID=$!
  # Poll it until it answers (a loaded machine may take a while to start it), as long as
  # it runs: EMULATOR_START_SECONDS (default 300) bounds the wait.
  url=""
  deadline=$((SECONDS + ${EMULATOR_START_SECONDS:-300}))
  until [ -n "$url" ] && .venv/bin/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/_emulator/state", timeout=5)' "$url" 2>/dev/null; do
    kill -0 "$EMULATOR_PID" 2>/dev/null || { echo "The emulator stopped:" >&2; cat "$EMULATOR_LOG" >&2; exit 1; }
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "The emulator did not answer within ${EMULATOR_START_SECONDS:-300}s:" >&2; cat "$EMULATOR_LOG" >&2; exit 1
    fi
    sleep 0.2
    url="$(sed -n 's/^Stripe emulator listening on \(http[^ ]*\).*/\1/p' "$EMULATOR_LOG")"
  done
  export TAP_STRIPE_CONNECT_API_KEY=sk_test_emulator
  export TAP_STRIPE_CONNECT_API_URL="$url"
  # Select the tap's streams the emulator serves (Meltano's `select` extra).
  selection="$(.venv/bin/python - "$url" <<'EOF'
import json
import sys
import urllib.request

from tap_stripe_connect.resources import REPORTS, RESOURCES

with urllib.request.urlopen(sys.argv[1] + "/_emulator/state") as response:
    served = json.load(response)["result"]["counts"]
# The tap's default selection (payment_methods is opt-in), less what the emulator lacks.
default = [r.name for r in RESOURCES if r.selected_by_default]
streams = [name for name in default if name in served]
# Stripe's balance reports (the emulator computes them from its balance transactions).
streams += [r.name for r in REPORTS if r.selected_by_default]
left_out = [name for name in default if name not in served]
print(json.dumps([f"{name}.*" for name in streams]))
note = f"; the emulator does not serve {', '.join(left_out)}" if left_out else ""
print(f"the {len(streams)} streams selected by default{note}")
EOF
)"
  export TAP_STRIPE_CONNECT__SELECT="${selection%%$'\n'*}"
  echo "    Streams: ${selection#*$'\n'}"
  # Generated data: its own file and state, loaded afresh each time.
  export TARGET_DUCKDB_PATH="$PWD/warehouse-emulator.duckdb"
  rm -f "$TARGET_DUCKDB_PATH" "$TARGET_DUCKDB_PATH.wal"
  RUN_ARGS="--state-id-suffix emulator --full-refresh --force"
else
  export TARGET_DUCKDB_PATH="${TARGET_DUCKDB_PATH:-$PWD/warehouse.duckdb}"
  # Say which account kind, never the key: sk_/rk_ and test/live are its first 7 characters.
  case "${TAP_STRIPE_CONNECT_API_KEY:0:7}" in
    sk_live|rk_live) mode="live" ;;
    *) mode="test" ;;
  esac
  echo "==> Reading YOUR STRIPE ACCOUNT ($mode mode, the key in TAP_STRIPE_CONNECT_API_KEY)" \
       "into $TARGET_DUCKDB_PATH; incrementally when Meltano has its state."
fi

RUN_LOG=.meltano/quickstart-run.log
# A progress line per running stream every 2 s (the tap's default is 10 s): a sync of the
# emulator's data takes a few seconds.
export TAP_STRIPE_CONNECT_PROGRESS_INTERVAL_SECONDS="${TAP_STRIPE_CONNECT_PROGRESS_INTERVAL_SECONDS:-2}"
echo "==> meltano run $RUN_ARGS${RUN_ARGS:+ }tap-stripe-connect target-duckdb"
echo "    Progress, warnings and the tap's summary below; the whole log is in $RUN_LOG"
set +e
# shellcheck disable=SC2086 # RUN_ARGS: words without spaces, split on purpose
$MELTANO run $RUN_ARGS tap-stripe-connect target-duckdb 2>&1 | tee "$RUN_LOG" \
  | .venv/bin/python scripts/meltano_view.py
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
  echo "meltano run failed (exit $status); the whole log is in $RUN_LOG" >&2
  exit "$status"
fi

echo "==> Rows per table in $TARGET_DUCKDB_PATH (schema stripe):"
.meltano/loaders/target-duckdb/venv/bin/python - "$TARGET_DUCKDB_PATH" <<'EOF'
import sys

import duckdb

con = duckdb.connect(sys.argv[1], read_only=True)
tables = [row[0] for row in con.execute(
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = 'stripe' ORDER BY table_name"
).fetchall()]
width = max([len(t) for t in tables] + [5])
for table in tables:
    count = con.execute(f'SELECT count(*) FROM stripe."{table}"').fetchone()[0]
    print(f"  {table:<{width}}  {count:>10,}")
EOF

if [ -n "$EMULATOR_PID" ]; then
  echo "    The emulator's clock starts at 2026-01-01: its data, and the MRR below, end in December 2025."
  echo "    accounts: the connected accounts of the emulator's account (a Connect platform), listed without account_ids."
fi

# Answers, not just tables: the dbt models (analytics/) and MRR by month with its movements.
echo "==> meltano run dbt-duckdb:build (revenue, MRR and churn models into schema analytics)"
bash scripts/install_meltano.sh dbt-duckdb
export DBT_DUCKDB_PATH="$TARGET_DUCKDB_PATH"
DBT_LOG=.meltano/quickstart-dbt.log
# The reconciliation line (a function, not an array: bash 3.2 under set -u).
reconciled() { .meltano/loaders/target-duckdb/venv/bin/python scripts/show_reconciliation.py "$TARGET_DUCKDB_PATH"; }
$MELTANO run dbt-duckdb:build >"$DBT_LOG" 2>&1 || { tail -n 40 "$DBT_LOG" >&2; reconciled || true; exit 1; }
echo "    dbt build: $(grep -o 'PASS=[0-9]* WARN=[0-9]* ERROR=[0-9]*' "$DBT_LOG" | tail -n 1) (log: $DBT_LOG)"
bash scripts/show_mrr.sh "$TARGET_DUCKDB_PATH"

echo "==> Done in $((SECONDS - started))s. Query it with DuckDB, e.g.:"
echo "    .meltano/loaders/target-duckdb/venv/bin/python -c \"import duckdb; con = duckdb.connect('$TARGET_DUCKDB_PATH', read_only=True); print(con.sql('SELECT id, amount, status FROM stripe.charges LIMIT 5'))\""

# The warehouse against Stripe's own balance reports (analytics/models/stripe_reconciliation.sql).
reconciled
