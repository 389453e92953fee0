#!/usr/bin/env bash
# The test suite: lint, then pytest (GUI tests under Xvfb via pytest-xvfb), CPU only.
# `--quick`: the core tests only, under a minute on 2 cores (no `slow` tests, which train
# networks, and no `gui` tests, which open napari); other arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
export QT_QPA_PLATFORM=xcb
if [ "${1:-}" = "--quick" ]; then
  shift
  exec python -m pytest -q -m "not slow and not gui" "$@"
fi
exec python -m pytest -q "$@"
