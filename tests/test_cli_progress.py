"""The terminal progress line of the CLI's jobs: a bar per phase, quiet with --json."""

from __future__ import annotations

from napari_unet.cli._progress import drain
from napari_unet.jobs import Progress


def _job():
    for r in (1, 2):
        for i in range(1, 4):
            yield Progress(i, 3, f"step {i}/3", {"round": r, "loss": 0.25, "val_dice": 0.9})
    return "result"


def test_drain_shows_one_bar_per_round_with_figures(capsys):
    assert drain(_job(), "simulating") == "result"
    err = capsys.readouterr().err
    assert "simulating, round 1" in err and "simulating, round 2" in err
    assert "3/3" in err and "loss 0.250" in err and "val Dice 0.900" in err


def test_drain_is_silent_when_disabled(capsys):
    assert drain(_job(), "simulating", enabled=False) == "result"
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
