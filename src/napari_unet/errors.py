"""Exceptions shared by the core, the CLI and the widgets.

`InputError` is for problems with what the user gave us (a file, a folder, an option):
its message is one sentence that names the file and the problem, shown as-is by the CLI
(exit status 2) and as a napari notification by the widgets. Anything else is a bug.
"""

from __future__ import annotations


class NapariUnetError(Exception):
    """Base class of the package's own errors."""


class InputError(NapariUnetError, ValueError):
    """Bad input from the user: a file, folder, option or layer we cannot use."""


class VolumeReadError(InputError):
    """A file or folder could not be read as a volume."""


class MultipleSeriesError(InputError):
    """A DICOM folder holds several series and the caller did not say which one.

    Attributes:
        path: the folder or file that was opened.
        series: one `SeriesInfo` (see `napari_unet.io.dicom`) per series found.
    """

    def __init__(self, message: str, *, path: str, series: list) -> None:
        super().__init__(message)
        self.path = path
        self.series = series


class ModelFileError(InputError):
    """A model file is missing, tampered, from a newer format or does not match its spec."""
