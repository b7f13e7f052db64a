#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need, then runs
# formatting and lint checks, builds the binaries the tests spawn, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Devices decode packages with GNU tar, busybox tar and Python's tarfile; the tests do
# the same. nginx and Varnish stand in for CloudFront in the CDN tests; Node.js runs the
# CloudFront Function and type-checks the k6 scripts.
missing=()
command -v tar >/dev/null || missing+=(tar)
command -v python3 >/dev/null || missing+=(python3)
command -v gzip >/dev/null || missing+=(gzip)
command -v busybox >/dev/null || missing+=(busybox)
command -v nginx >/dev/null || missing+=(nginx)
command -v varnishd >/dev/null || missing+=(varnish)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
tar --version | head -n 1 | grep -q 'GNU tar' || { echo "GNU tar is required (found: $(tar --version | head -n 1))" >&2; exit 1; }

# The aws-store tests run against moto, a local S3/DynamoDB-compatible server.
# One EXIT trap for all cleanup (also on failure and on SIGINT/SIGTERM): a second
# `trap ... EXIT` would replace the first.
source scripts/moto.sh
log=
# shellcheck disable=SC2317  # only called from the trap
cleanup() {
  moto_stop
  if [ -n "$log" ]; then rm -f "$log"; fi
}
trap cleanup EXIT
# Installed before the long build, so a registry problem fails the run early.
moto_install

# The deployment template and the load-test scripts, checked before the long build.
scripts/cfn-lint.sh
scripts/k6-check.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Some tests spawn the origin and seed binaries; build them before the tests run.
cargo build --workspace --bins --locked
log=$(mktemp)
# Started last, just before the tests: exports AWS_ENDPOINT_URL and FLEETPACK_TEST_AWS=1.
moto_start
status=0
# --no-fail-fast: a failing test binary must not hide the results of the others from the total.
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# The HTTP contract tests again, with the origin on DynamoDB + S3 instead of a local
# directory (the AWS-only tests already ran above).
FLEETPACK_TEST_STORE=aws cargo test --locked --test origin --no-fail-fast -- --skip aws:: --skip seed_cli:: --skip server:: 2>&1 | tee -a "$log" || status=$?
# One total over every test binary, as the last line, also when a test failed.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
