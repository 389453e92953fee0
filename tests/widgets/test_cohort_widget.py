"""The Cohort dock: open a run, review the most uncertain case in the U-Net panel, fine-tune."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli import main


@pytest.fixture
def cohort_run(tmp_path, tiny_scan):
    """A cohort run of two scans with a tiny 2D model, and a corrupt third one."""
    path, _ = tiny_scan
    model = tmp_path / "m.safetensors"
    assert main(["new-model", str(model), "--dims", "2", "--labels", "ball", "--modality",
                 "MR", "--context-slices", "1", "--patch", "16", "16"]) == 0  # fmt: skip
    second = tmp_path / "second.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1].copy(), img.affine), second)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a scan" * 30)
    out = tmp_path / "out"
    assert main(["predict", str(model), str(path), str(second), str(bad), "-o", str(out),
                 "--workers", "1", "--device", "cpu"]) == 3  # fmt: skip
    return out, model


@pytest.fixture
def cohort_widget(panel):
    """The Cohort dock beside the U-Net panel (the `panel` fixture) in one viewer."""
    from napari_unet._widgets.cohort_widget import CohortWidget

    widget = CohortWidget(panel.viewer)
    panel.viewer.window.add_dock_widget(widget, name="Cohort")
    return widget


def test_the_panel_is_docked_when_missing(make_napari_viewer) -> None:
    from napari_unet._widgets.cohort_widget import CohortWidget
    from napari_unet._widgets.panel import UNetPanel

    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    panel = widget.panel()
    assert isinstance(panel, UNetPanel) and widget.panel() is panel
    assert panel in viewer.window.dock_widgets.values()
    assert not widget.next_button.isEnabled()  # nothing to review before a cohort is open


def test_review_a_cohort_case_by_case(cohort_widget, cohort_run, qtbot) -> None:
    out, model = cohort_run
    widget = cohort_widget
    widget.open_cohort(out)
    rows = widget.rows()
    assert [r[0] for r in rows][-1] == "bad"  # failed cases last, never offered
    assert {r[0] for r in rows} == {"tiny_mr", "second", "bad"}
    assert all(r[3] == "no" for r in rows)
    assert rows[-1][1] == "failed"

    first = widget.open_next()
    panel = widget.panel()
    assert panel is widget._find_panel()
    session = panel.session
    assert session.model is not None and session.model.path == str(model)
    predicted = np.asarray(nib.load(out / f"{first.id}.nii.gz").dataobj)
    np.testing.assert_array_equal(session.loop.labels, predicted)
    assert session.labels_layer in widget.viewer.layers

    session.loop.labels[..., 4] = 0  # the user corrects one slice and reviews it
    session.loop.mark_reviewed([4])
    second = widget.open_next()  # the first case is saved on the way
    assert second.id != first.id
    assert (out / "review" / first.id / "workspace.json").is_file()
    reviewed = {r[0]: r[3] for r in widget.rows()}
    assert reviewed[first.id] == "yes (1)" and reviewed[second.id] == "no"
    assert len([lay for lay in widget.viewer.layers if lay.name.startswith(first.id)]) == 0

    widget.steps.setValue(2)
    worker = widget.finetune()
    assert worker is not None and not widget.finetune_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120000)
    assert widget.review.model_path != str(model.absolute())
    assert "Model: " in widget.model_label.text() and "m.safetensors" not in (
        widget.model_label.text()
    )
    assert session.model.hash == widget.review.versions[-1]["hash"]

    back = widget.review.entry(first.id)  # reopening a reviewed case brings its review back
    widget.open_case(back)
    assert sorted(panel.session.loop.reviewed) == [4]
    assert not panel.session.loop.labels[..., 4].any()
