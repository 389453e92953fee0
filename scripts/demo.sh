#!/usr/bin/env bash
# The main job: napari with the plugin and a sample volume. With no display it runs the
# same loop offscreen and writes screenshots and the exported NIfTI to demo_out/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
if [ -n "${DISPLAY:-}" ] && [ -z "${CI:-}" ] && [ "${1:-}" != "--headless" ]; then
  exec napari-unet demo "$@"
fi
args=()
for a in "$@"; do [ "$a" = "--headless" ] || args+=("$a"); done
export QT_QPA_PLATFORM=xcb
exec xvfb-run -a -s "-screen 0 1600x1000x24" napari-unet demo --headless --out demo_out \
  "${args[@]}"
