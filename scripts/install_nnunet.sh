#!/usr/bin/env bash
# Optional: nnU-Net v2 for importing nnU-Net results folders and the tests that compare our
# predictions with nnUNetPredictor. Idempotent; run inside the activated .venv.
#
# `pip install nnunetv2` would pull dynamic_network_architectures -> timm -> torchvision,
# which replaces the CPU build of torch with a CUDA one (gigabytes). Neither the predictor
# nor PlainConvUNet/ResidualEncoderUNet needs timm, so the nnU-Net packages go in with
# --no-deps and their remaining dependencies by name (timm and torchvision left out).
set -euo pipefail
python -c "import nnunetv2, dynamic_network_architectures, batchgeneratorsv2" 2>/dev/null && exit 0
before="$(python -c 'import torch; print(torch.__version__)')"
python -m pip install -q --no-deps "nnunetv2>=2.5,<2.9" "dynamic_network_architectures>=0.4.4,<0.5" \
  "acvl-utils>=0.2.6,<0.3" "batchgenerators>=0.25.1" "batchgeneratorsv2>=0.3.2"
python -m pip install -q "einops" "yacs" "blosc2>=3.3.2" "connected-components-3d" "graphviz" \
  "seaborn" "imagecodecs" "future" "threadpoolctl" "pillow" "matplotlib" "SimpleITK>=2.2.1" \
  "pandas" "tifffile" "requests" "scikit-learn" "scikit-image>=0.19.3"
after="$(python -c 'import torch; print(torch.__version__)')"
if [ "$before" != "$after" ]; then
  echo "install_nnunet: torch changed from $before to $after" >&2
  exit 1
fi
python -c "from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor; \
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet"
