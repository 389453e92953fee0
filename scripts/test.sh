#!/usr/bin/env bash
# The test suite: lint, then pytest (GUI tests under Xvfb via pytest-xvfb), CPU only.
# `--quick` skips the tests that train networks (marker `slow`); other arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
export QT_QPA_PLATFORM=xcb
if [ "${1:-}" = "--quick" ]; then
  shift
  exec python -m pytest -q -m "not slow" "$@"
fi
exec python -m pytest -q "$@"
