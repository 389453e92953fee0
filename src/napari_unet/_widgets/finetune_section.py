"""Fine-tune step: train on the reviewed slices in a worker, live curves, re-predict."""

from __future__ import annotations

import time

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from napari_unet._widgets._plots import CurvePlot
from napari_unet._widgets._session import LoopSession
from napari_unet._widgets._worker import start_job
from napari_unet.errors import InputError
from napari_unet.workspace import ModelVersion

DEFAULT_SECONDS = 60


class FinetuneSection(QGroupBox):
    """Start/Stop fine-tuning with a time budget; then re-predict unreviewed slices."""

    def __init__(self, session: LoopSession, segment_section) -> None:
        super().__init__("4 · Fine-tune")
        self.session = session
        self.segment = segment_section
        self.worker = None
        self.seconds_spin = QSpinBox()
        self.seconds_spin.setRange(5, 3600)
        self.seconds_spin.setValue(DEFAULT_SECONDS)
        self.seconds_spin.setSuffix(" s")
        self.start_button = QPushButton("Fine-tune")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.plot = CurvePlot({"loss": "#ff7f50", "val Dice": "#3cb371"})
        self.status = QLabel("Review a few slices, then fine-tune.")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Budget"))
        row.addWidget(self.seconds_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)
        self.start_button.clicked.connect(self._start_clicked)
        self.stop_button.clicked.connect(self.stop)

    def start(self, *, seconds: float | None = None, steps: int | None = None,
              repredict: bool = True, on_done=None):  # fmt: skip
        """Fine-tune the current model on the reviewed slices; returns the worker."""
        session = self.session
        session.require_image()
        if session.model is None:
            raise InputError("create or open a model first (step 1)")
        ws = session.workspace
        if not ws.reviewed:
            raise InputError("no reviewed slices yet: paint on a slice or accept it (step 3)")
        # a snapshot (painting may go on meanwhile): a plain copy here on the GUI thread,
        # reoriented to the scan's grid in the worker
        display = np.array(session.labels_layer.data)
        geometry = session.geometry
        reviewed = sorted(ws.reviewed)
        budget = float(seconds if seconds is not None else self.seconds_spin.value())
        model, parent_hash = session.model, ws.current
        parent = next((v for v in ws.models if v.hash == parent_hash), None)
        previous = parent.metrics.get("trained_slices", []) if parent else []
        parent_dice = parent.metrics.get("val_dice") if parent else None
        out_folder = session.models_folder()
        self._stop_requested = False

        def job():
            return (yield from finetune_job(
                model, ws.image, np.ascontiguousarray(geometry.to_native(display)),
                reviewed, ws.slice_axis, out_folder,
                previous=previous, seconds=budget, steps=steps,
                device=self.segment.device_combo.currentText(),
                stop=lambda: self._stop_requested,
            ))  # fmt: skip

        def progress(events) -> None:
            for event in events:
                step = event.data.get("step", event.done)
                self.plot.add("loss", step, event.data.get("loss"))
                self.plot.add("val Dice", step, event.data.get("val_dice"))
            self.status.setText(events[-1].message or f"step {step}")

        def done(result) -> None:
            path, digest, metrics, loaded = result
            version = ModelVersion(str(path), digest, parent_hash, metrics=metrics)
            if metrics.get("drift"):
                version.note = "flagged: worse on earlier slices"
            ws.add_model(version)
            session.model = loaded
            session.changed.emit()
            self.status.setText(describe_result(digest, metrics, parent_dice))
            if repredict:
                self.segment.run(only_unreviewed=True, on_done=on_done)
            elif on_done is not None:
                on_done(None)

        self.plot.clear()
        self._busy(True)
        self.worker = start_job(job, description="Fine-tuning", on_result=done,
                                on_progress=progress,
                                on_finished=lambda: self._busy(False))  # fmt: skip
        return self.worker

    def stop(self) -> None:
        """Stop at the next step; the best model so far is kept as a new version."""
        self._stop_requested = True

    def _busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    def _start_clicked(self) -> None:
        try:
            self.start()
        except InputError as e:
            show_error(str(e))


def finetune_job(model, image, labels, reviewed, slice_axis, out_folder, *, previous,
                 seconds, steps, device, stop):  # fmt: skip
    """Fine-tune on the reviewed slices and save the new version atomically.

    Slices the parent already learned from (``previous``) are replayed: trained on
    again and scored with parent and child, so a version that got worse on them is
    flagged. Returns (path, hash, metrics, the new version loaded back from its file).
    """
    from napari_unet.training import TrainConfig, finetune_steps, save_version, sparse_volume

    spec = model.spec
    label_volume = image.with_array(labels)
    name = image.source or "napari"
    new = sorted(set(reviewed) - set(previous))
    old = sorted(set(reviewed) & set(previous))
    if not new:  # nothing new: train on everything, no drift comparison
        new, old = sorted(reviewed), []
    data = [sparse_volume(image, label_volume, spec, slices=new, slice_axis=slice_axis,
                          name=name)]  # fmt: skip
    replay = []
    if old:
        replay = [sparse_volume(image, label_volume, spec, slices=old, slice_axis=slice_axis,
                                name=f"{name} (earlier slices)")]  # fmt: skip
    config = TrainConfig(steps=steps, seconds=None if steps else seconds, device=device)
    result = yield from finetune_steps(model, spec, data, replay=replay, config=config, stop=stop)
    out_folder.mkdir(parents=True, exist_ok=True)
    path = out_folder / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
    digest = save_version(path, result, note="fine-tuned in napari")
    metrics = {
        "val_dice": result.metrics.get("val_dice"),
        "steps": result.metrics.get("steps"),
        "seconds": result.metrics.get("seconds"),
        "stopped": result.metrics.get("stopped"),
        "trained_slices": sorted(int(i) for i in reviewed),
        "drift": bool(result.drift and result.drift.get("flagged")),
    }
    if result.drift:
        metrics["earlier_slices_dice"] = [result.drift.get("parent_dice"),
                                          result.drift.get("child_dice")]  # fmt: skip
    from napari_unet.models.files import load_model

    return path, digest, metrics, load_model(path)


def describe_result(digest: str, metrics: dict, parent_dice: float | None) -> str:
    """One line for the user: the new version, its Dice, and the change."""
    text = f"new version {digest[:8]} after {metrics.get('steps')} steps"
    dice = metrics.get("val_dice")
    if dice is not None:
        text += f"; Dice on held-out reviewed voxels {dice:.3f}"
        if parent_dice is not None:
            text += f" (was {parent_dice:.3f}, {dice - parent_dice:+.3f})"
    earlier = metrics.get("earlier_slices_dice")
    if earlier and None not in earlier:
        text += f"; on earlier slices {earlier[0]:.3f} → {earlier[1]:.3f}"
    if metrics.get("drift"):
        text += " — flagged: worse on earlier slices; roll back in step 1 if needed"
    return text
