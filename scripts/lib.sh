# Shell helpers shared by the scripts in this folder (sourced, not run).

# Run a command quietly; show its output only when it fails.
quiet() {
  local log status=0
  log="$(mktemp)"
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" != 0 ]; then cat "$log" >&2; echo "failed: $*" >&2; fi
  rm -f "$log"
  return "$status"
}
