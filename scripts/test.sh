#!/usr/bin/env bash
# Installs what is needed, checks the code with ruff and mypy, then runs every
# test: unit tests and the Mininet tests against real Open vSwitch and the
# real controller process.
# Extra arguments go to pytest (for example: -k skeleton, -m "not mininet").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The code's shape before its behaviour: lint and import order over the whole
# tree, types of the pure core, the layering of the packages (all configured
# in pyproject.toml). Any failing fails the run (set -e).
.venv/bin/ruff check .
.venv/bin/mypy
# The direction of imports between packages (pyproject.toml's contracts).
.venv/bin/lint-imports --no-cache
# setup.sh has just installed and started everything: a test that finds a
# prerequisite missing must fail here, not skip (tests/*/conftest.py).
export ENFORCEMENT_NO_SKIP=1
set +e
.venv/bin/python -m pytest -ra "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit $rc
