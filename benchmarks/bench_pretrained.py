"""Starting from a pretrained model: a bundle trained on one CT domain, applied to another.

1. Pretrain (the source domain): the CT-like phantom (seed 7) as generated, every voxel
   labelled; the loop's own trainer (`Loop.finetune(all_voxels=True)`) fits the
   recommended 2D U-Net (without context slices, so that it has a plain MONAI
   equivalent), and `export_bundle` writes it as a MONAI bundle — the kind of file a
   user brings from the Model Zoo or a colleague.
2. For each target seed (another anatomy from the same generator, with a shifted
   contrast/noise profile: soft-tissue contrast ×``--contrast``, +``--offset`` HU,
   Gaussian noise of ``--noise`` HU), through `napari_unet.loop`:

   * ``before``: `import_model` (the bundle read as data) → `Loop.open_model` → predict;
   * ``finetuned``: the truth revealed on 5 evenly spread slices (with image content)
     along the through-plane axis, `Loop.finetune` for ``--steps`` steps, predict;
   * ``scratch``: a new model of the same spec, the same 5 slices, the same steps.

   Dice (mean over liver, kidney, spleen) is scored on the slices never revealed.
   ``agreement`` is the Dice between our prediction of the imported model and MONAI's
   own inference of the exported bundle (its ConfigParser, SliceInferer, same weights),
   with our engine's windows and with MONAI's (roi = patch, overlap 0.25); it is also
   measured on the source domain, where the model is confident.

Usage::

    python benchmarks/bench_pretrained.py [--quick] [--seeds 3] \
        [--out benchmarks/results/pretrained_cpu.json]

Timings on a shared machine are noisy: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABELS = ["liver", "kidney", "spleen"]


def domain(seed: int, *, contrast: float = 1.0, offset: float = 0.0, noise: float = 0.0):
    """The phantom of ``seed``; soft tissue (−200…300 HU) rescaled around 40 HU."""
    from napari_unet.samples.phantom import make_ct_abdomen

    sample = make_ct_abdomen(seed)
    hu = sample.image.array.astype(np.float32)
    soft = (hu > -200) & (hu < 300)
    hu = np.where(soft, 40 + (hu - 40) * contrast + offset, hu)
    if noise:
        hu = hu + np.random.default_rng(seed + 1).normal(0, noise, hu.shape).astype(np.float32)
    image = sample.image.with_array(np.clip(np.round(hu), -1024, 3071).astype(np.int16))
    return image, sample.labels


def dice_on(pred: np.ndarray, truth: np.ndarray, axis: int, rows: list[int]) -> dict:
    from napari_unet.evaluation.metrics import dice_per_class, mean_dice

    p, t = np.take(pred, rows, axis=axis), np.take(truth, rows, axis=axis)
    per_class = dice_per_class(p, t, len(LABELS) + 1)
    return {"dice": mean_dice(per_class), "dice_per_class": per_class}


def pretrain(folder: Path, steps: int) -> tuple[Path, float]:
    from napari_unet.jobs import run_job
    from napari_unet.loop import Loop
    from napari_unet.models.importers import export_bundle

    t0 = time.perf_counter()
    image, truth = domain(7)
    loop = Loop(image, truth.array.copy(), models_folder=folder / "source", device="cpu")
    loop.new_model(LABELS, spatial_dims=2, arch="recommended", modality="CT", context_slices=0)
    loop.add_version(run_job(loop.finetune(steps=steps, all_voxels=True, seed=0)))
    bundle = export_bundle(loop.current.file, folder / "bundle")
    return bundle, time.perf_counter() - t0


def reveal(loop, truth: np.ndarray, slices: list[int]) -> None:
    axis = loop.slice_axis
    index = [slice(None)] * 3
    index[axis] = slices
    loop.labels[tuple(index)] = truth[tuple(index)]
    loop.mark_reviewed(slices)


def monai_prediction(bundle: Path, image) -> np.ndarray:
    """MONAI's own inference of the exported bundle (our config: trusted here)."""
    import torch
    from monai.bundle import ConfigParser

    from napari_unet.io.nifti import save_nifti

    with tempfile.TemporaryDirectory() as tmp:
        path = save_nifti(image, Path(tmp) / "scan.nii.gz")
        parser = ConfigParser()
        parser.read_config(bundle / "configs" / "inference.json")
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
        net.eval()
        data = parser.get_parsed_content("preprocessing")({"image": str(path)})
        with torch.no_grad():
            data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], net)[0]
        parser["postprocessing"]["transforms"] = parser["postprocessing"]["transforms"][:3]
        return np.asarray(parser.get_parsed_content("postprocessing")(data)["pred"][0])


def agreement(bundle: Path, image, folder: Path) -> dict:
    """Dice of our prediction of the imported bundle vs MONAI's: our windows, MONAI's."""
    from napari_unet.evaluation.metrics import dice_per_class, mean_dice
    from napari_unet.inference.orientation import predict_oriented_steps
    from napari_unet.jobs import run_job
    from napari_unet.models.files import load_model
    from napari_unet.models.importers import import_model

    loaded = load_model(import_model(bundle, folder / "agreement.safetensors", overwrite=True))
    reference = monai_prediction(bundle, image)
    out = {}
    windows = {"ours": {}, "same_windows": {"roi_size": loaded.spec.patch_size, "overlap": 0.25}}
    for name, options in windows.items():
        pred = run_job(predict_oriented_steps(loaded, None, image, device="cpu", **options))
        per_class = dice_per_class(pred.labels.array, reference, len(LABELS) + 1)
        out[name] = {"dice": mean_dice(per_class), "dice_per_class": per_class}
    return out


def finetune_and_score(
    loop, truth: np.ndarray, slices: list[int], rows: list[int], steps: int, seed: int
) -> dict:
    """Reveal the truth on ``slices``, fine-tune for ``steps`` steps, predict; Dice on
    ``rows`` and ``seconds`` (fine-tune + prediction)."""
    from napari_unet.jobs import run_job

    reveal(loop, truth, slices)
    t0 = time.perf_counter()
    loop.add_version(run_job(loop.finetune(steps=steps, seed=seed)))
    prediction = run_job(loop.predict())
    score = dice_on(prediction.labels.array, truth, loop.slice_axis, rows)
    score["seconds"] = round(time.perf_counter() - t0, 2)
    return score


def run_seed(bundle: Path, seed: int, args, folder: Path) -> dict:
    from napari_unet.jobs import run_job
    from napari_unet.loop import Loop
    from napari_unet.loop.simulation import content_slices, evenly_spaced
    from napari_unet.models.importers import import_model

    image, truth = domain(seed, contrast=args.contrast, offset=args.offset, noise=args.noise)
    out: dict = {"seed": seed}
    t0 = time.perf_counter()
    model = import_model(bundle, folder / f"imported-{seed}.safetensors")
    loop = Loop(image, models_folder=folder / f"ft-{seed}", device="cpu")
    loop.open_model(model)
    axis = loop.slice_axis
    slices = evenly_spaced(content_slices(image.array, axis), args.slices)
    rows = sorted(set(range(image.shape[axis])) - set(slices))
    before = run_job(loop.predict())
    out["before"] = dice_on(before.labels.array, truth.array, axis, rows)
    out["import_and_predict_s"] = round(time.perf_counter() - t0, 2)
    if args.agreement:
        out["agreement_with_monai"] = agreement(bundle, image, folder)
    loop.merge(before)
    out["finetuned"] = finetune_and_score(loop, truth.array, slices, rows, args.steps, seed)

    scratch = Loop(image, models_folder=folder / f"scratch-{seed}", device="cpu")
    scratch.new_model(LABELS, spatial_dims=2, arch="recommended", modality="CT",
                      context_slices=0, seed=seed)  # fmt: skip
    out["scratch"] = finetune_and_score(scratch, truth.array, slices, rows, args.steps, seed)
    out["revealed_slices"] = [int(s) for s in slices]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, few steps (smoke run)")
    parser.add_argument("--seeds", type=int, default=3, help="target-domain scans")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning budget (both arms)")
    parser.add_argument("--slices", type=int, default=5, help="corrected slices")
    parser.add_argument("--contrast", type=float, default=0.6)
    parser.add_argument("--offset", type=float, default=25.0)
    parser.add_argument("--noise", type=float, default=20.0)
    parser.add_argument("--no-agreement", dest="agreement", action="store_false")
    parser.add_argument("--out", default="benchmarks/results/pretrained_cpu.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.pretrain_steps, args.steps = 1, 40, 20
    import monai
    import torch

    from napari_unet import __version__

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "device": "cpu",
        },
        "versions": {
            "napari_unet": __version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
            "numpy": np.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "source_domain": "phantom seed 7 as generated (noise 12 HU), all voxels labelled",
        "target_domain": f"phantom seeds 101.. with soft-tissue contrast x{args.contrast}, "
        f"+{args.offset} HU, noise +{args.noise} HU",
        "load_before": [round(v, 2) for v in load_before],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundle, seconds = pretrain(folder, args.pretrain_steps)
        results["pretrain_seconds"] = round(seconds, 1)
        if args.agreement:  # on the source domain, where the model is confident
            results["agreement_source"] = agreement(bundle, domain(7)[0], folder)
        print(f"pretrained in {seconds:.0f} s → {bundle}", flush=True)
        results["seeds"] = []
        for seed in range(101, 101 + args.seeds):
            r = run_seed(bundle, seed, args, folder)
            results["seeds"].append(r)
            print(json.dumps({k: r[k] for k in ("seed", "before", "finetuned", "scratch")}),
                  flush=True)  # fmt: skip
    for arm in ("before", "finetuned", "scratch"):
        values = [r[arm]["dice"] for r in results["seeds"]]
        results[f"{arm}_mean"] = round(float(np.mean(values)), 4)
        results[f"{arm}_min"] = round(float(np.min(values)), 4)
    if args.agreement:
        for key in ("ours", "same_windows"):
            values = [r["agreement_with_monai"][key]["dice"] for r in results["seeds"]]
            results[f"agreement_target_{key}_min"] = round(float(min(values)), 4)
    results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    print("| arm | Dice mean | Dice min |\n|---|---|---|")
    for arm in ("before", "finetuned", "scratch"):
        print(f"| {arm} | {results[f'{arm}_mean']:.3f} | {results[f'{arm}_min']:.3f} |")
    if not args.quick or args.out != parser.get_default("out"):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
