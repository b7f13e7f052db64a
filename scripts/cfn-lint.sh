#!/usr/bin/env bash
# Lints the CloudFormation templates in cloudformation/ with cfn-lint.
#
#   scripts/cfn-lint.sh                 # every cloudformation/*.yaml
#   scripts/cfn-lint.sh path/to/t.yaml  # just these
#
# Installs cfn-lint, pinned to CFN_LINT_VERSION, from PyPI into the virtualenv
# .tools/cfn-lint (git-ignored) on the first run; later runs reuse it. Exits non-zero on
# any finding, informational ones included: the templates are kept free of all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION=1.58.0
CFN_LINT_VENV=${CFN_LINT_VENV:-$PWD/.tools/cfn-lint}
py=$CFN_LINT_VENV/bin/python

# Trust the venv only if its own python runs and finds the pinned version (an
# interrupted install fails this and is redone).
if ! { [ -x "$py" ] && "$py" -c "import importlib.metadata as m, sys
sys.exit(m.version('cfn-lint') != '$CFN_LINT_VERSION')" 2>/dev/null; }; then
  echo "installing cfn-lint==$CFN_LINT_VERSION into $CFN_LINT_VENV" >&2
  # Debian's own python3 has no venv/ensurepip until python3-venv is installed.
  if ! python3 -m venv --clear "$CFN_LINT_VENV" >/dev/null 2>&1; then
    echo "python3 -m venv failed; installing python3-venv with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv --clear "$CFN_LINT_VENV"
  fi
  "$CFN_LINT_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION"
fi

if [ $# -eq 0 ]; then
  set -- cloudformation/*.yaml
fi
echo "cfn-lint $("$CFN_LINT_VENV/bin/cfn-lint" --version | awk '{ print $2 }') on $*" >&2
# Informational rules (I...) are checked too, and any finding at all, informational
# ones included, makes the exit status non-zero (cfn-lint sets bit 2 for errors, 4 for
# warnings, 8 for informational findings).
"$CFN_LINT_VENV/bin/cfn-lint" --include-checks I --non-zero-exit-code informational -- "$@"
echo "cfn-lint: no findings" >&2
