"""Re-export of `napari_unet.evaluation.bench.run_benchmark` (the benchmark moved there)."""

# TEMPORARY: cli import, removed when cli is updated
from napari_unet.evaluation.bench import run_benchmark  # noqa: F401
