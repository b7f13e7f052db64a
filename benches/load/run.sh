#!/usr/bin/env bash
# Load harness: the origin against nginx and a bare hyper server on the same machine, in
# one run. See benches/load/README.md for what it measures and its settings.
#
#   bash benches/load/run.sh                              # full run (about 10 minutes)
#   DURATION=2 ROUNDS=1 SKIP_1GIB=1 bash benches/load/run.sh   # quick check of the harness
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
HERE=$ROOT/benches/load
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD_DIR=$TARGET_DIR/load
WORK=$LOAD_DIR/work

say() { printf '[load] %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# One EXIT trap does all cleanup, also after a failure, Ctrl-C or SIGTERM. The long
# steps (builds, harness) run in a process group of their own, in the background, so
# that a signal reaches this trap at once instead of after the step. The trap stops that
# group (the harness stops what it started when it gets SIGTERM), then stops, by pid,
# any server the harness left behind (it lists each one in $WORK/pids).
step=
# shellcheck disable=SC2317  # only called from the trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$step" ] && kill -0 "$step" 2>/dev/null; then
    kill -TERM -- "-$step" 2>/dev/null || true
    wait "$step" 2>/dev/null || true
  fi
  if [ -f "$WORK/pids" ]; then
    local pid name left=()
    while read -r pid name; do
      if kill -0 "$pid" 2>/dev/null; then
        say "stopping $name (pid $pid), still running"
        kill -TERM "$pid" 2>/dev/null || true
        left+=("$pid")
      fi
    done <"$WORK/pids"
    if [ ${#left[@]} -gt 0 ]; then
      sleep 2
      for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
  fi
  exit "$status"
}
# Runs a command as its own process group and waits for it; its status is this one's.
run_step() {
  local status=0
  setsid "$@" &
  step=$!
  wait "$step" || status=$?
  step=
  return "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools -------------------------------------------------------------------------
find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "$(find_nginx)" ] || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
command -v tar >/dev/null || missing+=(tar)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: install them, or run as root so that apt-get can"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]} with apt-get"
  # Keep the nginx package from starting its own service on port 80: a policy-rc.d
  # that refuses service starts, only for the time of the install.
  policy=/usr/sbin/policy-rc.d
  added_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
  fi
  status=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } || status=$?
  if [ -n "$added_policy" ]; then rm -f "$policy"; fi
  [ "$status" = 0 ] || die "apt-get install ${missing[*]} failed"
fi
NGINX=$(find_nginx)
[ -n "$NGINX" ] || die "nginx not found after installing it"
command -v cargo >/dev/null || die "cargo is required (install Rust with rustup)"

# --- 2. builds ------------------------------------------------------------------------
mkdir -p "$LOAD_DIR"
rm -rf "$WORK"
rm -f "$LOAD_DIR/results.md"
mkdir -p "$WORK/logs"

say "building fleetpack-origin and fleetpack-seed (release)"
run_step cargo build --release -p fleetpack-origin -p fleetpack-seed \
  --message-format=json-render-diagnostics >"$WORK/logs/build-release.json"
say "building the ceiling server (cargo bench --bench ceiling --no-run)"
run_step cargo bench --bench ceiling --no-run \
  --message-format=json-render-diagnostics >"$WORK/logs/build-ceiling.json"

executable() { python3 "$HERE/harness.py" executable "$1" "$2"; }
ORIGIN=$(executable "$WORK/logs/build-release.json" fleetpack-origin)
SEED=$(executable "$WORK/logs/build-release.json" fleetpack-seed)
CEILING=$(executable "$WORK/logs/build-ceiling.json" ceiling)

say "disk space where the work directory lives:"
df -h "$LOAD_DIR" >&2

# --- 3-5. fleet, servers, measurements, report ----------------------------------------
run_step python3 "$HERE/harness.py" run \
  --origin "$ORIGIN" --seed "$SEED" --ceiling "$CEILING" --nginx "$NGINX" \
  --work "$WORK" --results "$LOAD_DIR/results.md"
