#!/usr/bin/env bash
# The GPU figures of issue 14 in one command, each result JSON naming the GPU
# (torch.cuda.get_device_name):
#
#   inference  benchmarks/bench_inference.py --device cuda, at "auto" precision (bf16
#              where native, as users get it) and at fp32; MONAI defaults and tuned in the
#              same dtype; 512x512x300 cases added on CUDA
#              -> results/inference_gpu.json, results/inference_fp32_gpu.json
#   finetune   a fine-tune round of 10 corrected slices on the MR sample through the Loop
#              (napari_unet.evaluation.gpu finetune)      -> results/finetune_gpu.json
#   memory     peak GPU memory and time of predict_volume against volume size, 256^3 to
#              512^3, 3D and 2D nets (napari_unet.evaluation.gpu memory)
#                                                          -> results/memory_gpu.json
#
# Usage: benchmarks/gpu.sh [all|inference|finetune|memory ...]   (default: all)
# Environment: PYTHON (default: python), OUT (default: benchmarks/results).
# Without a CUDA GPU it stops at once with one line saying so (exit status 2).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/results}

if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    build=$("$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")' 2>&1 || true)
    echo "benchmarks/gpu.sh: needs a CUDA GPU, and none is visible ($build)" >&2
    exit 2
fi
"$PYTHON" -c 'import napari_unet' || {
    echo "benchmarks/gpu.sh: napari_unet is not importable with $PYTHON (pip install -e .)" >&2
    exit 2
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
mkdir -p "$OUT"
gpu=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))')
echo "GPU: $gpu" >&2

for step in "${steps[@]}"; do
    case "$step" in
    all | inference)
        "$PYTHON" benchmarks/bench_inference.py --device cuda --precision auto \
            --note "benchmarks/gpu.sh on $gpu" --out "$OUT/inference_gpu.json"
        "$PYTHON" benchmarks/bench_inference.py --device cuda --precision fp32 \
            --note "benchmarks/gpu.sh on $gpu" --out "$OUT/inference_fp32_gpu.json"
        ;;&
    all | finetune)
        "$PYTHON" -m napari_unet.evaluation.gpu finetune --out "$OUT/finetune_gpu.json"
        ;;&
    all | memory)
        "$PYTHON" -m napari_unet.evaluation.gpu memory --weights-dir benchmarks/weights \
            --out "$OUT/memory_gpu.json"
        ;;
    inference | finetune) ;;
    *)
        echo "benchmarks/gpu.sh: unknown step '$step' (all, inference, finetune, memory)" >&2
        exit 2
        ;;
    esac
done
echo "GPU results written to $OUT/*_gpu*.json" >&2
