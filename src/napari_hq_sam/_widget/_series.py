"""An image series: the images of a folder, one at a time, each with its labels file (no Qt).

The images are those :func:`~napari_hq_sam.engine.image_sets.list_images` finds (the
CLI's rule for folders: ``.tif``, ``.tiff``, ``.npy``, ``.zarr``, natural name order).
Image ``NAME`` has its labels in ``OUT/NAME.tif``. A labels file is replaced only when
it is the one this series read or wrote (same size and modification time as then);
for any other existing file ``confirm(path)`` decides: :data:`REPLACE` it, :data:`KEEP`
it (the labels in the viewer are not saved), or :data:`CANCEL` (stay on the image).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.image import describe_layout
from ..engine.image_sets import SetImage, list_images
from ..errors import InputError, OutputError

LABELS_SUFFIX = ".tif"
# answers of confirm(path) about a labels file the series did not write
REPLACE, KEEP, CANCEL = "replace", "keep", "cancel"
# outcomes of ImageSeries.save
WRITTEN, UNCHANGED = "written", "unchanged"


@dataclass(frozen=True)
class Opened:
    """An image of the series read for display.

    Attributes
    ----------
    member : SetImage
        Its path and name.
    image : array-like
        The image, lazily read where the format allows (memory-mapped TIFF, zarr).
    labels : np.ndarray
        Its labels ``(..., H, W)``: the labels file's, or zeros.
    loaded : bool
        Whether ``labels`` came from the labels file.
    note : str or None
        Why an existing labels file was not loaded (then ``labels`` are zeros).
    """

    member: SetImage
    image: object
    labels: np.ndarray
    loaded: bool
    note: str | None = None


class ImageSeries:
    """The images of ``folder`` and the folder their labels go to.

    Parameters
    ----------
    folder : str or Path
        Folder (or quoted glob) of images.
    out : str or Path, optional
        Where labels are written (made at the first write); default
        ``<folder>_labels`` beside the folder.

    Raises
    ------
    InputError
        No images there, two images of one name, or ``out`` is a folder of the images.
    OutputError
        ``out`` is a file.
    """

    def __init__(self, folder: str | Path, out: str | Path | None = None):
        self.images = list_images(folder)
        self.out = check_output_folder(default_output(folder) if out is None else out,
                                       self.images)
        self._known: dict[Path, tuple[int, int]] = {}  # files read or written: (size, mtime)
        self._saved: dict[Path, str] = {}  # digest of the labels each file holds

    def __len__(self) -> int:
        return len(self.images)

    def labels_path(self, position: int) -> Path:
        """``OUT/NAME.tif`` of the image at ``position``."""
        return self.out / f"{self.images[position].name}{LABELS_SUFFIX}"

    def open(self, position: int) -> Opened:
        """Read the image at ``position`` and its labels (the file's when it fits).

        Raises
        ------
        InputError, MissingFileError
            The image cannot be read (damaged, unknown format, gone).
        """
        from ..engine.io import read_image

        member = self.images[position]
        image = read_image(member.path)
        shape = tuple(describe_layout(image.shape).labels_shape)
        path = self.labels_path(position)
        if not path.exists():
            return Opened(member, image, np.zeros(shape, np.uint32), False)
        try:
            labels = np.array(read_image(path))  # a copy: painted into, never the file
            if labels.shape != shape or labels.dtype.kind not in "biu":
                raise InputError(f"it holds {labels.dtype} of shape {labels.shape}, the image "
                                 f"needs whole numbers of shape {shape}")
        except InputError as exc:
            note = (f"labels file {path.name} was not loaded ({exc}); it is replaced only if "
                    "you confirm.")
            return Opened(member, image, np.zeros(shape, np.uint32), False, note)
        self._remember(path, labels)
        return Opened(member, image, labels, True)

    def save(self, position: int, labels, confirm: Callable[[Path], str]) -> str:
        """Write the labels of the image at ``position`` unless there is nothing new.

        Nothing is written when no labels file exists and ``labels`` are empty, or when
        the file already holds these labels. For a file this series did not read or
        write (or that changed since), ``confirm(path)`` answers :data:`REPLACE`,
        :data:`KEEP` or :data:`CANCEL`.

        Returns
        -------
        str
            :data:`WRITTEN`, :data:`UNCHANGED` (nothing to write), or the answer
            :data:`KEEP` / :data:`CANCEL` (nothing written).

        Raises
        ------
        OutputError
            The file could not be written (disk full, permissions); nothing is lost:
            the labels stay in the viewer.
        """
        from ..engine.io import write_labels
        from ..engine.labels import labels_dtype

        path = self.labels_path(position)
        labels = np.asarray(labels)
        exists = path.exists()
        if not exists and not labels.any():
            return UNCHANGED
        ours = exists and self._known.get(path) == _stamp(path)
        if ours and self._saved.get(path) == _digest(labels):
            return UNCHANGED
        if exists and not ours:
            answer = confirm(path)
            if answer != REPLACE:
                return CANCEL if answer == CANCEL else KEEP
        out = labels.astype(labels_dtype(int(labels.max()) if labels.size else 0), copy=False)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the labels folder {self.out} "
                              f"({exc.strerror or exc}): choose another one.") from None
        write_labels(path, out, overwrite=exists)
        self._remember(path, labels)
        return WRITTEN

    def _remember(self, path: Path, labels: np.ndarray) -> None:
        self._known[path] = _stamp(path)
        self._saved[path] = _digest(labels)


def check_output_folder(out: str | Path, images: list[SetImage]) -> Path:
    """``out`` as the labels folder of ``images``, refused where labels must not go.

    Raises
    ------
    InputError
        ``out`` is a folder the images come from (labels would join the series).
    OutputError
        ``out`` is a file.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"the labels folder {out} is a file: choose a folder.")
    if out.resolve() in {m.path.parent.resolve() for m in images}:
        raise InputError(f"{out} holds the images: choose another folder for their labels, "
                         "so that labels never join the series or replace an image.")
    return out


def default_output(folder: str | Path) -> Path:
    """``<folder>_labels`` beside ``folder`` (for a glob, beside the folder it starts in)."""
    path = Path(folder)
    while any(c in path.name for c in "*?[") and path.parent != path:
        path = path.parent
    return path.with_name(f"{path.name}_labels")


def _stamp(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _digest(labels: np.ndarray) -> str:
    """What the labels hold (dtype, shape, values)."""
    values = np.ascontiguousarray(labels)
    head = f"{values.dtype.str}{values.shape}".encode()
    return hashlib.sha256(head + values.tobytes()).hexdigest()
