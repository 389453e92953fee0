#!/usr/bin/env bash
# Runs the quick test suite on one given torch release, to check the torch/monai floors
# declared in pyproject.toml:  bash scripts/check_torch_floor.sh 2.8.0 [pytest args]
# A throwaway venv in /tmp/torch-floor-VERSION (never .venv) gets that torch, held there by
# a constraints file, then a non-editable install of HEAD (git archive: nothing is written
# into the work tree) with the qt, testing, dicom and cluster extras, and einops (MONAI's
# UNETR/SwinUNETR need it; .venv has it through nnU-Net). pip picks the newest MONAI that
# accepts that torch; the line "torch X / monai Y" tells which. nnU-Net is left out.
# Only PyPI is reached here: for Linux x86_64 it has CUDA builds only before torch 2.13, so
# each older release costs ~3 GB of downloads and ~5 GB on disk (delete the venv after).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version="${1:?usage: check_torch_floor.sh TORCH_VERSION [pytest args]}"
shift
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
venv="/tmp/torch-floor-$version"
src="$venv/src"
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
echo "torch==$version" > "$venv/constraints.txt"
rm -rf "$src" && mkdir -p "$src"
git archive HEAD | tar -x -C "$src"
"$venv/bin/python" -m pip install -q --no-cache-dir -c "$venv/constraints.txt" "torch==$version"
"$venv/bin/python" -m pip install -q --no-cache-dir -c "$venv/constraints.txt" \
  "$src[qt,testing,dicom,cluster]" einops
"$venv/bin/python" -c "import torch, monai; print('torch', torch.__version__, '/ monai', monai.__version__)"
cd "$src"  # the tests of HEAD against the installed copy of HEAD
export QT_QPA_PLATFORM=offscreen
exec "$venv/bin/python" -m pytest -q -m "not slow and not gui" -p no:cacheprovider tests \
  --ignore=tests/widgets "$@"
