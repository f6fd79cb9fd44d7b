"""Reading images and writing labels for headless runs (TIFF, zarr, npy).

Outputs are written under a hidden temporary name next to the target
(``.NAME.partial-XXXX``) and renamed when complete, so a file or folder with the
requested name is always whole.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import HQSamError, InputError, MissingFileError, OutputError

IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr", ".npy")
LABEL_SUFFIXES = (".tif", ".tiff", ".zarr")


def read_image(path: str | Path):
    """Open an image lazily where the format allows.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` (memory-mapped when uncompressed), ``.zarr`` (an array,
        or a group holding one array or OME-Zarr level ``0``) or ``.npy``.

    Returns
    -------
    array-like
        numpy (possibly memory-mapped) or zarr array.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"image {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"cannot read {path}: use one of {', '.join(IMAGE_SUFFIXES)}.")
    try:
        return _open_image(path, suffix)
    except HQSamError:
        raise
    except ValueError as exc:  # the readers' word for a file that is not what its name says
        raise InputError(f"cannot read image {path}: {exc}") from exc


def _open_image(path: Path, suffix: str):
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            return tifffile.memmap(str(path), mode="r")
        except (ValueError, OSError):
            return tifffile.imread(str(path))
    if suffix == ".npy":
        return np.load(path, mmap_mode="r")
    return _open_zarr(path)


def _open_zarr(path: Path):
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    arrays = dict(node.arrays())
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    if "0" in arrays:
        return arrays["0"]
    raise InputError(f"zarr group {path} holds several arrays ({sorted(arrays)}): give the "
                     "path of one of them, e.g. image.zarr/name.")


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an existing output (unless ``overwrite``) or an unknown format, early."""
    path = Path(path)
    if path.suffix.lower() not in LABEL_SUFFIXES:
        raise InputError(f"output {path} must end in {', '.join(LABEL_SUFFIXES)}.")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} already exists: pass --overwrite to replace it "
                          "or choose another --out.")
    if not path.parent.is_dir():
        raise MissingFileError(f"output folder {path.parent} does not exist.")
    return path


def partial_path(path: Path) -> Path:
    """A hidden temporary sibling of ``path`` for writing before the final rename."""
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")


def create_zarr_labels(path: Path, shape: tuple[int, ...], dtype) -> object:
    """An empty zarr labels array, one chunk per 2D slice, at ``path``."""
    import zarr

    chunks = (1,) * (len(shape) - 2) + tuple(shape[-2:])
    return zarr.create_array(str(path), shape=shape, dtype=dtype, chunks=chunks, fill_value=0)


def commit_output(tmp: Path, path: Path, overwrite: bool = False) -> Path:
    """Move a finished temporary output into place (replacing ``path`` if ``overwrite``)."""
    if path.exists():
        if not overwrite:
            raise OutputError(f"output {path} appeared during the run: not replacing it.")
        if path.is_dir():
            old = partial_path(path)
            os.rename(path, old)
            shutil.rmtree(old)
    os.replace(tmp, path)
    return path


def remove_partial(tmp: Path) -> None:
    """Delete a temporary output left by a failed or interrupted run."""
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


def write_labels(path: str | Path, labels, overwrite: bool = False) -> Path:
    """Write ``labels`` to ``.tif`` or ``.zarr`` through a temporary name.

    Parameters
    ----------
    path : str or Path
        Target file (``.tif``/``.tiff``) or folder (``.zarr``).
    labels : array-like
        The labels array.
    overwrite : bool
        Replace an existing target.
    """
    path = check_output(path, overwrite)
    tmp = partial_path(path)
    try:
        if path.suffix.lower() == ".zarr":
            create_zarr_labels(tmp, tuple(labels.shape), labels.dtype)[...] = np.asarray(labels)
        else:
            import tifffile

            tifffile.imwrite(str(tmp), np.asarray(labels), compression="zlib")
        return commit_output(tmp, path, overwrite)
    finally:
        remove_partial(tmp)
