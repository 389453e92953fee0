"""Model step: create or open a model, see its versions and lineage, roll back."""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from napari_unet._widgets._modality import describe_normalization, layer_modality, model_modality
from napari_unet._widgets._session import LoopSession
from napari_unet.errors import InputError

RECOMMENDED = "Recommended (full-resolution U-Net)"
ARCH_NAMES = {
    RECOMMENDED: "recommended",
    "U-Net": "unet",
    "Residual U-Net": "resunet",
    "Attention U-Net": "attention_unet",
    "Classic U-Net (Ronneberger)": "classic_unet",
}


class ModelSection(QGroupBox):
    """New model (2D/3D, architecture, label names), open a file, versions, roll back."""

    def __init__(self, session: LoopSession) -> None:
        super().__init__("1 · Model")
        self.session = session
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(list(ARCH_NAMES))
        self.dims_combo = QComboBox()
        self.dims_combo.addItems(["2D (slice by slice)", "3D (patches)"])
        self.labels_edit = QLineEdit()
        self.labels_edit.setPlaceholderText("label names, e.g. liver, kidney, spleen")
        self.new_button = QPushButton("New model")
        self.open_button = QPushButton("Open model…")
        self.import_button = QPushButton("Import model…")
        self.import_button.setToolTip(
            "A MONAI bundle (.zip, or its configs/metadata.json) or an nnU-Net v2 results "
            "folder (its plans.json): read as data, saved as a napari-unet model, opened"
        )
        self.versions = QListWidget()
        self.versions.setMaximumHeight(110)
        self.rollback_button = QPushButton("Use selected version")

        form = QFormLayout()
        form.addRow("Architecture", self.arch_combo)
        form.addRow("Mode", self.dims_combo)
        form.addRow("Labels", self.labels_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_button)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.import_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.versions)
        layout.addWidget(self.rollback_button)

        self.new_button.clicked.connect(self._new_clicked)
        self.open_button.clicked.connect(self._open_clicked)
        self.import_button.clicked.connect(self._import_clicked)
        self.rollback_button.clicked.connect(self._rollback_clicked)
        session.changed.connect(self.refresh)

    # --- actions (public so tests and the demo can drive them) --------------------------
    def new_model(
        self,
        labels: list[str],
        *,
        spatial_dims: int = 2,
        arch: str = "recommended",
        modality: str | None = None,
    ):
        """Create an untrained model for the current scan and make it current.

        The loop's one spec factory chooses the network, context slices and the
        normalisation for the modality: ``modality`` ("CT" or "MR"), else the scan's as
        read, detected or chosen (`_modality.model_modality`: never none). Returns the
        model file.
        """
        session = self.session
        image = session.require_image()
        note = ""
        if modality is None:
            modality, note = model_modality(*layer_modality(image), session.loop.image.array)
        version = session.loop.new_model(labels, spatial_dims=spatial_dims, arch=arch,
                                         modality=modality)  # fmt: skip
        if note:
            show_info(note)
        self._show_labels()
        return Path(version.file)

    def open_model(self, path: str | Path) -> None:
        image = self.session.require_image()
        self.session.loop.open_model(path)
        self._show_labels()
        warning = normalization_mismatch(self.session.model.spec, layer_modality(image)[0])
        if warning:
            show_warning(warning)

    def _show_labels(self) -> None:
        spec = self.session.model.spec
        self.session.ensure_labels_layer(spec.labels, spec.colors)
        self.session.changed.emit()

    def roll_back(self, version_hash: str) -> None:
        self.session.loop.use_version(version_hash)
        show_info(f"now using model version {version_hash[:8]}")

    # --- Qt slots --------------------------------------------------------------------------
    def _new_clicked(self) -> None:
        names = [n.strip() for n in self.labels_edit.text().split(",") if n.strip()]
        try:
            self.new_model(
                names,
                spatial_dims=3 if self.dims_combo.currentIndex() == 1 else 2,
                arch=ARCH_NAMES[self.arch_combo.currentText()],
            )
        except InputError as e:
            show_error(str(e))

    def _open_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open model", "", "napari-unet models (*.safetensors)"
        )
        if path:
            try:
                self.open_model(path)
            except InputError as e:
                show_error(str(e))

    def _import_clicked(self) -> None:
        """Pick a bundle zip or a file in a bundle / nnU-Net folder; import, then open."""
        picked, _ = QFileDialog.getOpenFileName(
            self, "Import a MONAI bundle (.zip, configs/metadata.json) or nnU-Net folder "
            "(plans.json)", "", "Models (*.zip *.json *.yaml);;All files (*)",
        )  # fmt: skip
        if not picked:
            return
        chosen = Path(picked)
        source = chosen.parent if chosen.suffix.lower() != ".zip" else chosen
        if source.name == "configs":
            source = source.parent
        try:
            folder = self.session.loop.models_folder
            folder.mkdir(parents=True, exist_ok=True)
        except (InputError, OSError) as e:
            show_error(str(e))
            return
        out, _ = QFileDialog.getSaveFileName(
            self, "Save the imported model as", str(folder / f"{source.stem}.safetensors"),
            "napari-unet models (*.safetensors)",
        )  # fmt: skip
        if not out:
            return

        def job():
            from napari_unet.jobs import Progress
            from napari_unet.models.importers import import_model

            yield Progress(0, 1, "reading")
            return import_model(source, out, overwrite=True)

        def opened(path) -> None:
            try:
                self.open_model(path)
            except InputError as e:
                show_error(str(e))
            else:
                show_info(f"imported {source.name} as {Path(path).name}")

        from napari_unet._widgets._worker import start_job

        start_job(job, description="Import model", on_result=opened)

    def _rollback_clicked(self) -> None:
        item = self.versions.currentItem()
        if item is None:
            show_error("select a model version in the list first")
            return
        try:
            self.roll_back(item.data(256))
        except InputError as e:
            show_error(str(e))

    def refresh(self) -> None:
        self.versions.clear()
        ws = self.session.workspace
        if ws is None:
            return
        names = {v.hash: f"v{i}" for i, v in enumerate(ws.models)}
        for version in ws.models:
            dice = version.metrics.get("val_dice")
            text = f"{names[version.hash]}  {version.hash[:8]}"
            if dice is not None:
                text += f"  Dice {dice:.3f}"
            if version.parent in names:
                text += f"  ← {names[version.parent]}"
            if version.note:
                text += f"  ({version.note})"
            if version.hash == ws.current:
                text = "● " + text
            item = QListWidgetItem(text)
            item.setData(256, version.hash)  # Qt.UserRole
            self.versions.addItem(item)


def normalization_mismatch(spec, modality: str) -> str:
    """A warning when a model's normalisation does not suit the scan ("" if it does)."""
    mode = str(spec.normalization.mode)
    if mode == "none":
        return (
            f"model {spec.name!r} has no intensity normalisation: it sees raw values, "
            "so its predictions are only right on scans like the ones it was trained on"
        )
    wanted = {"CT": "ct", "MR": "mr"}.get(modality)
    if wanted is not None and mode != wanted:
        made_for = "CT" if mode == "ct" else "MR"
        return (
            f"model {spec.name!r} normalises as {describe_normalization(spec.normalization)}"
            f", made for {made_for}, but this scan is {modality}"
        )
    return ""
