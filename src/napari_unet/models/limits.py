"""What a `ModelSpec` may hold: the architecture and option names and the numeric bounds.

A spec arrives from files written by others, so every value that sizes an allocation is
bounded (see `napari_unet.models.spec` for what each bound means); the checks are in
`napari_unet.models.checks` and `napari_unet.models.arch_args`. Imports nothing.
"""

from __future__ import annotations

#: The presets (`preset_spec`).
ARCHS = ("unet", "resunet", "attention_unet", "classic_unet")
PRESET_ARCHS = ARCHS
#: Architectures of imported models (`napari_unet.models.importers`): MONAI SegResNet,
#: DynUNet, SwinUNETR, UNETR and nnU-Net's PlainConvUNet / ResidualEncoderUNet (these two
#: need the optional dynamic_network_architectures package when built).
IMPORTED_ARCHS = ("segresnet", "dynunet", "swin_unetr", "unetr", "nnunet_plain", "nnunet_resenc")
ALL_ARCHS = ARCHS + IMPORTED_ARCHS
#: `ModelSpec.inference_style` values: None (ours) or nnU-Net v2's predictor.
INFERENCE_STYLES = (None, "nnunet")
NORMALIZATION_MODES = ("ct", "mr", "none")

#: Bounds on what a spec may ask for (see the `napari_unet.models.spec` docstring).
MAX_LABELS = 255
MAX_LABEL_CHARS = 64
MAX_NAME_CHARS = 256
MAX_CONTEXT_SLICES = 8
MAX_IN_CHANNELS = 32
PATCH_RANGE = (8, 1024)
MAX_PATCH_VOXELS = 2**27
SPACING_RANGE = (0.05, 20.0)
MAX_FEATURES = 1024
MAX_LEVELS = 8
MAX_KERNEL = 7
MAX_STRIDE = 4
MAX_RES_UNITS = 8
#: Any other integer in ``arch_args`` (also inside ``norm``/``act`` arguments).
MAX_ARG_INT = 1024
#: nnU-Net layer names accepted in ``arch_args`` (mapped to torch classes by `build_model`).
NNUNET_OPS = {
    "conv_op": ("Conv2d", "Conv3d"),
    "norm_op": ("InstanceNorm2d", "InstanceNorm3d", "BatchNorm2d", "BatchNorm3d", None),
    "dropout_op": ("Dropout", "Dropout2d", "Dropout3d", None),
    "nonlin": ("LeakyReLU", "ReLU", "PReLU", "GELU", "ELU", None),
    "block": ("BasicBlockD", "BottleneckD"),
}
#: Largest hidden size and MLP width of a transformer (UNETR: 768 and 3072).
MAX_HIDDEN = 1024
MAX_MLP = 4096
MAX_HEADS = 64
