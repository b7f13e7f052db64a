#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need, then runs
# formatting and lint checks, builds the binaries the tests spawn, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Devices decode packages with GNU tar and Python's tarfile; the tests do the same.
missing=()
command -v tar >/dev/null || missing+=(tar)
command -v python3 >/dev/null || missing+=(python3)
command -v gzip >/dev/null || missing+=(gzip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
tar --version | head -n 1 | grep -q 'GNU tar' || { echo "GNU tar is required (found: $(tar --version | head -n 1))" >&2; exit 1; }

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Some tests spawn the origin and seed binaries; build them before the tests run.
cargo build --workspace --bins --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One total over every test binary, as the last line.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
