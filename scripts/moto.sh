# shellcheck shell=bash
# A local S3/DynamoDB-compatible server (moto) for the tests that talk to the aws store.
#
# Sourced, not run: scripts/test.sh uses it, and so can a developer, to get a server in
# their own shell:
#
#   source scripts/moto.sh && moto_install && moto_start
#   cargo test ...                  # AWS_ENDPOINT_URL etc. are now exported
#   "$MOTO_VENV/bin/python" tests/fixtures/aws_sample_init.py ota-rules ota-binaries
#   moto_stop
#
# moto_install  creates the virtualenv .tools/moto (git-ignored) with moto[server] pinned
#               to MOTO_VERSION; does nothing when it is already there.
# moto_start    starts moto_server on a free 127.0.0.1 port, waits until it answers, and
#               exports AWS_ENDPOINT_URL, AWS_REGION (and AWS_DEFAULT_REGION, for boto3),
#               fake credentials and FLEETPACK_TEST_AWS=1 (the tests that need the
#               server then must run).
# moto_stop     stops it again; safe to call when nothing is running (test.sh calls it
#               from its EXIT trap).
#
# No `set -e` here: this file is sourced into interactive shells, where it would close
# the shell on the first failing command. The functions return non-zero instead.

MOTO_VERSION=5.2.5
MOTO_VENV=${MOTO_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/moto}
# How long moto_start waits for the server to answer, in seconds.
MOTO_START_TIMEOUT=${MOTO_START_TIMEOUT:-30}

# A subshell body, so that set -e can be used without leaking into the caller's shell.
moto_install() (
  set -euo pipefail
  local py=$MOTO_VENV/bin/python
  # Reruns are fast: trust the venv only if its own python runs and finds the pinned
  # moto and the server's dependencies (an interrupted install fails this and is redone).
  # The venv also runs the device verifier in the tests: moto depends on cryptography.
  if [ -x "$py" ] && "$py" -c "import importlib.metadata as m, sys, boto3, flask, cryptography
sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; then
    return 0
  fi
  echo "installing moto[server]==$MOTO_VERSION into $MOTO_VENV" >&2
  # Debian's own python3 has no venv/ensurepip until python3-venv is installed.
  if ! python3 -m venv --clear "$MOTO_VENV" >/dev/null 2>&1; then
    echo "python3 -m venv failed; installing python3-venv with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv --clear "$MOTO_VENV"
  fi
  # --no-compile halves the install (byte-compiling all of moto and botocore up front
  # takes ~20 s); the few modules a run imports compile lazily on first use.
  "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check --no-compile \
    "moto[server]==$MOTO_VERSION"
)

moto_start() {
  if [ -n "${MOTO_PID:-}" ] && kill -0 "$MOTO_PID" 2>/dev/null; then
    echo "moto already running (pid $MOTO_PID) at $AWS_ENDPOINT_URL" >&2
    return 0
  fi
  local py=$MOTO_VENV/bin/python port deadline why
  [ -x "$MOTO_VENV/bin/moto_server" ] || { echo "moto is not installed: run moto_install" >&2; return 1; }
  # Port 0 lets the kernel pick a free port; moto gets it a moment later (a small race,
  # caught below: moto then exits at once and its log says why).
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || return 1
  MOTO_LOG=$(mktemp "${TMPDIR:-/tmp}/moto.XXXXXX.log") || return 1
  # stdin from /dev/null: a background server must not read the developer's terminal.
  "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  deadline=$((SECONDS + MOTO_START_TIMEOUT))
  # Any HTTP answer counts (an error status too): the server is up and routing.
  until "$py" -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass' "http://127.0.0.1:$port/" 2>/dev/null; do
    why=
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      why="exited before it answered"
    elif [ "$SECONDS" -ge "$deadline" ]; then
      why="did not answer within ${MOTO_START_TIMEOUT}s"
    fi
    if [ -n "$why" ]; then
      echo "moto_server on 127.0.0.1:$port $why; its log:" >&2
      cat "$MOTO_LOG" >&2
      moto_stop
      return 1
    fi
    sleep 0.2
  done
  export AWS_ENDPOINT_URL=http://127.0.0.1:$port
  export AWS_REGION=us-east-1
  # boto3 and the aws CLI ignore AWS_REGION and read only this one.
  export AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=testing
  export AWS_SECRET_ACCESS_KEY=testing
  # Never fall back to the instance metadata service for credentials or region.
  export AWS_EC2_METADATA_DISABLED=true
  # The aws-store tests run (and fail if the server is missing) instead of skipping.
  export FLEETPACK_TEST_AWS=1
  echo "moto $MOTO_VERSION listening at $AWS_ENDPOINT_URL (pid $MOTO_PID, log $MOTO_LOG)" >&2
}

# Silent on stdout and always returns 0: it runs in test.sh's EXIT trap, after the
# suite's total, which must stay the last line.
moto_stop() {
  if [ -n "${MOTO_PID:-}" ]; then
    # Each step may fail (already gone); `|| true` because test.sh's set -e is on here.
    kill "$MOTO_PID" 2>/dev/null || true
    # Give it a few seconds to exit on SIGTERM, then make sure.
    for _ in $(seq 50); do kill -0 "$MOTO_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  if [ -n "${MOTO_LOG:-}" ]; then rm -f "$MOTO_LOG"; fi
  # Leave no variables pointing at a server that is gone.
  unset MOTO_PID MOTO_LOG AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY FLEETPACK_TEST_AWS
  return 0
}
