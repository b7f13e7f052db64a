#!/usr/bin/env bash
# Type-checks the k6 load-test scripts in benches/k6 with TypeScript (JSDoc in plain
# JavaScript, k6's API from @types/k6). Installs the pinned tools from
# benches/k6/package-lock.json with `npm ci`, unless node_modules already holds exactly
# that lock; exits non-zero on any type error.
set -euo pipefail
cd "$(dirname "$0")/../benches/k6"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm with apt-get"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi

# The stamp records what node_modules was installed from: the lock, package.json and
# the platform (TypeScript's compiler comes as a per-platform package).
stamp=node_modules/.k6-check.stamp
want=$(
  {
    sha256sum package-lock.json package.json
    node -p 'process.platform + "-" + process.arch'
  } | sha256sum | cut -d' ' -f1
)
if [ -x node_modules/.bin/tsc ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "k6-check: node_modules matches package-lock.json; skipping npm ci"
else
  echo "k6-check: npm ci"
  rm -f "$stamp"
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi

echo "k6-check: $(npx --no -- tsc --version)"
# --no: never fetch a package named tsc from the registry; only the one npm ci installed.
if npx --no -- tsc --allowJs --checkJs --noEmit -p .; then
  echo "k6-check: no type errors"
else
  echo "k6-check: type errors in benches/k6 (see above)" >&2
  exit 1
fi
