"""Fine-tune step: train on the reviewed slices in a worker, live curves, re-predict."""

from __future__ import annotations

import time

import numpy as np
from napari.utils.notifications import show_error, show_info
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
        labels = session.labels_native().copy()  # a snapshot: painting may go on meanwhile
        reviewed = sorted(ws.reviewed)
        budget = float(seconds if seconds is not None else self.seconds_spin.value())
        model, parent_hash = session.model, ws.current
        out_folder = session.models_folder()
        self._stop_requested = False

        def job():
            return (yield from finetune_job(
                model, ws.image, labels, reviewed, ws.slice_axis, out_folder,
                seconds=None if steps else budget, steps=steps,
                device=self.segment.device_combo.currentText(),
                stop=lambda: self._stop_requested,
            ))  # fmt: skip

        def progress(event) -> None:
            data = event.data
            step = data.get("step", event.done)
            self.plot.add("loss", step, data.get("loss"))
            self.plot.add("val Dice", step, data.get("val_dice"))
            self.status.setText(event.message or f"step {step}")

        def done(result) -> None:
            path, digest, metrics = result
            version = ModelVersion(str(path), digest, parent_hash, metrics=metrics)
            if metrics.get("drift"):
                version.note = "flagged: worse on earlier slices"
            ws.add_model(version)
            from napari_unet.models.files import load_model

            session.model = load_model(path)
            session.changed.emit()
            before = metrics.get("parent_val_dice")
            after = metrics.get("val_dice")
            change = ""
            if before is not None and after is not None:
                change = f"; Dice on held-out reviewed slices {before:.3f} → {after:.3f}"
            self.status.setText(f"new version {digest[:8]}{change}")
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


def finetune_job(model, image, labels, reviewed, slice_axis, out_folder, *, seconds, steps,
                 device, stop):  # fmt: skip
    """Adapter over `napari_unet.training`: fine-tune, save the new version atomically.

    Returns (path, hash, metrics).
    """
    from napari_unet.training import finetune_steps

    result = yield from finetune_steps(
        model, image, labels, slices=reviewed, slice_axis=slice_axis,
        seconds=seconds, steps=steps, device=device, stop=stop,
    )  # fmt: skip
    out_folder.mkdir(parents=True, exist_ok=True)
    path = out_folder / f"{model.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
    digest = result.save(path)
    metrics = dict(result.metrics)
    show_info(f"fine-tuned in {metrics.get('seconds', float('nan')):.0f} s") if np.isfinite(
        metrics.get("seconds", np.nan)
    ) else None
    return path, digest, metrics
