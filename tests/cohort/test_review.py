"""The review queue: order, opening a case into a Loop, saving it, training on reviewed cases."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cohort import CohortReview, collect_cases, predict_cohort
from napari_unet.cohort.manifest import write_records
from napari_unet.errors import InputError
from napari_unet.jobs import run_job


def _record(cid, status="done", unc=0.5, **extra) -> dict:
    return {"id": cid, "input": f"/x/{cid}.nii.gz", "output": f"/o/{cid}.nii.gz",
            "status": status, "seconds": 1.0, "device": "cpu", "model": "h",
            "uncertainty": unc, "error": None, **extra}  # fmt: skip


def test_queue_order(tmp_path) -> None:
    write_records(tmp_path, [
        _record("low", unc=0.1), _record("high", unc=0.9), _record("broken", "failed", None),
        _record("empty", unc=None), _record("mid", "skipped", 0.5),
    ])  # fmt: skip
    review = CohortReview.open(tmp_path)
    # nothing found first, then the most uncertain; failed cases are never offered
    assert [e.id for e in review.queue()] == ["empty", "high", "mid", "low"]
    assert review.next_to_review().id == "empty"
    assert review.entry("broken").openable is False
    with pytest.raises(InputError, match="no case 'nope'"):
        review.entry("nope")


def test_open_refuses_other_things(tmp_path) -> None:
    with pytest.raises(InputError, match=r"no cohort\.jsonl"):
        CohortReview.open(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InputError, match=r"output folder or a \.csv"):
        CohortReview.open(tmp_path / "x.txt")


def test_review_save_and_finetune(model2d, cohort, tmp_path) -> None:
    out = tmp_path / "out"
    cases = collect_cases(cohort["nifti"][:2])
    result = predict_cohort(model2d, cases, out, workers=1, device="cpu")
    assert result.done == 2
    review = CohortReview.open(out)
    assert review.model_path == str(model2d.absolute())
    entry = review.next_to_review()
    loop = review.open_loop(entry, device="cpu")
    predicted = np.asarray(nib.load(entry.labels).dataobj)
    np.testing.assert_array_equal(loop.labels, predicted)
    assert loop.model.hash == result.model and not loop.reviewed
    loop.labels[..., 2] = 0
    loop.labels[8:14, 8:12, 2] = 1  # a correction
    loop.mark_reviewed([2, 3])
    review.save(entry, loop)
    assert (out / "review" / entry.id / "workspace.json").is_file()
    assert entry.reviewed and entry.reviewed_slices == 2
    assert review.next_to_review().id != entry.id

    again = CohortReview.open(out)  # reopened: the review is kept
    back = again.open_loop(again.entry(entry.id), device="cpu")
    assert sorted(back.reviewed) == [2, 3]
    np.testing.assert_array_equal(back.labels, loop.labels)
    (case,) = again.training_cases()
    assert case.id == entry.id and case.slices == (2, 3)

    version = run_job(again.finetune(steps=2))
    assert version.cases == [entry.id] and version.parent == result.model
    again.adopt(version)
    assert again.model_path == str(version.path.absolute())
    assert CohortReview.open(out).model_path == again.model_path
    assert version.model.lineage["cohort"]["cases"] == [entry.id]


def test_manifest_review_starts_from_its_labels(tmp_path) -> None:
    from tests.cohort.conftest import write_scan

    write_scan(tmp_path / "a.nii.gz", 0, labels=tmp_path / "a_lab.nii.gz")
    write_scan(tmp_path / "b.nii.gz", 1)
    (tmp_path / "m.csv").write_text("image,labels\na.nii.gz,a_lab.nii.gz\nb.nii.gz,\n")
    review = CohortReview.open(tmp_path / "m.csv")
    assert [e.status for e in review.entries] == ["pending", "pending"]
    assert [e.id for e in review.queue()] == ["a", "b"]
    assert review.root == tmp_path / "m-review" and review.model_path is None
    loop = review.open_loop(review.entry("a"), device="cpu")
    assert loop.labels.max() == 1 and loop.model is None
    assert review.open_loop(review.entry("b"), device="cpu").labels.max() == 0
    with pytest.raises(InputError, match="no reviewed case"):
        review.finetune(steps=1)
