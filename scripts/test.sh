#!/usr/bin/env bash
# The test suite: lint, then pytest (GUI tests under Xvfb via pytest-xvfb), CPU only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
ruff check src tests benchmarks
ruff format --check src tests benchmarks
export QT_QPA_PLATFORM=xcb
python -m pytest -q "$@"
