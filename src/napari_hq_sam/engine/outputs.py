"""Checking and writing labels outputs (TIFF, zarr, OME-Zarr), through a temporary name.

Outputs are written under a hidden temporary name next to the target
(``.NAME.partial-HOST-PID-XXXXXXXX``) and renamed when complete, so a file or folder
with the requested name is always whole. A run removes the temporary outputs of the
same target left by runs that are gone (killed on this machine, or untouched for
:data:`STALE_SECONDS`). An output is never the run's input, nor inside it.

A zarr output is chunked in tiles of at most :data:`LABELS_CHUNK` pixels per slice
and written region by region, so labels of slices of any size are never held or
written whole. With a known pixel scale (:class:`~.pixel_scale.PixelScale`), a zarr
output is an OME-Zarr (NGFF 0.4) group holding the labels as level ``0``, and a TIFF
output records the scale in its resolution tags and description.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingFileError, OutputError
from . import resources
from .image_files import ZARR_METADATA, zarr_root
from .pixel_scale import PixelScale

LABEL_SUFFIXES = (".tif", ".tiff", ".zarr")
# Pixels of one zarr chunk along Y and X: one tile of a tiled run, small enough that
# writing a mask's bounding box touches few chunks, large enough to keep files few.
LABELS_CHUNK = 1024
# A temporary output this long untouched belongs to no live run (a run on another
# machine, or a name without a process id).
STALE_SECONDS = 24 * 3600.0
_DISK_FULL = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT")
                       if hasattr(errno, name))
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def check_output(path: str | Path, overwrite: bool = False,
                 inputs: Iterable[tuple[str, str | Path | None]] = ()) -> Path:
    """Check a labels output before any work; remove stale temporary outputs of its name.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` file or ``.zarr`` folder to write.
    overwrite : bool
        An existing output may be replaced (only by the same kind: a file by a file,
        a zarr folder by a zarr folder).
    inputs : iterable of (str, path)
        The run's inputs as ``(what, path)``, e.g. ``("image", "scan.tif")`` (a None
        path is skipped): the output may be none of them (also through symbolic or
        hard links), nor lie inside a zarr one, nor hold one.

    Raises
    ------
    InputError
        Unknown format, or the output is an input.
    MissingFileError
        The output folder does not exist.
    OutputError
        The output exists (without ``overwrite``, or of another kind), or its folder
        is not writable.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise InputError(f"output {path} must end in {', '.join(LABEL_SUFFIXES)}.")
    folder = path.parent
    if not folder.exists():
        raise MissingFileError(f"output folder {folder} does not exist: create it first "
                               f"(mkdir -p {folder}) or choose another --out.")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} is a file, not a folder: choose another "
                          "--out.")
    check_not_input(path, inputs)
    if os.path.lexists(path):
        _check_replaceable(path, suffix, overwrite)
    remove_stale_partials(path)
    _check_writable(path)
    return path


def check_output_space(path: Path, shape: tuple[int, ...], dtype) -> None:
    """Refuse a labels output of ``shape``/``dtype`` that the disk has no room for.

    The size is uncompressed, the most the compressed output can take.
    """
    need = resources.array_bytes(shape, dtype)
    free = resources.free_disk(Path(path).parent)
    if need > free:
        raise OutputError(
            f"not enough disk space for {path}: labels {tuple(shape)} {np.dtype(dtype)} take "
            f"up to {resources.size_text(need)}, {resources.size_text(free)} free there. "
            "Free some space or choose another --out.")


def check_not_input(path: str | Path, inputs: Iterable[tuple[str, str | Path | None]],
                    name: str = "output", flag: str = "--out") -> None:
    """Refuse to write ``path`` when it is one of ``inputs``, lies in a zarr one or holds one.

    Parameters
    ----------
    path : str or Path
        What the run writes (an output, a cache folder).
    inputs : iterable of (str, path)
        ``(what, path)`` of each input, e.g. ``("image", "scan.zarr/raw")``; None
        paths are skipped. Symbolic and hard links count as the file they name.
    name, flag : str
        How messages call ``path`` and the option that chooses it.

    Raises
    ------
    InputError
    """
    for what, source in inputs:
        if source is not None:
            _refuse_input(Path(path), what, Path(source), name, flag)


def _refuse_input(out: Path, what: str, source: Path, name: str, flag: str) -> None:
    out_real, source_real = out.resolve(), source.resolve()
    same = out_real == source_real
    if not same and os.path.lexists(out) and source.exists():
        with contextlib.suppress(OSError):
            same = os.path.samefile(out, source)  # hard links: one file under two names
    if same:
        raise InputError(f"{name} {out} is the {what} {source} (the same file or folder): "
                         f"choose another {flag}; hqsam never writes over its input.")
    root = zarr_root(source)  # an array inside a zarr group: the whole group is the input
    store = source_real if root is None else root.resolve()
    if out_real.is_relative_to(store) and _is_zarr_folder(store):
        shown = (f"the {what} {source}" if root is None or root == source
                 else f"the zarr group {root} of the {what} {source}")
        where = "is" if out_real == store else "lies inside"
        raise InputError(f"{name} {out} {where} {shown}: choose another {flag} outside it; hqsam "
                         "never writes into its input.")
    if source_real.is_relative_to(out_real):
        raise InputError(f"{name} {out} holds the {what} {source}: choose another {flag}; "
                         "hqsam never writes over its input.")


def _is_zarr_folder(path: Path) -> bool:
    """A folder zarr wrote (or one named ``.zarr``), whose contents hqsam must not change."""
    return path.is_dir() and (path.suffix.lower() == ".zarr"
                              or any((path / name).is_file() for name in ZARR_METADATA))


def _check_replaceable(path: Path, suffix: str, overwrite: bool) -> None:
    if not overwrite:
        raise OutputError(f"output {path} already exists: pass --overwrite to replace it "
                          "or choose another --out.")
    if suffix != ".zarr" and path.is_dir():
        raise OutputError(f"output {path} is a folder: a {suffix} output is a file, and "
                          "--overwrite replaces only a file. Choose another --out.")
    if suffix == ".zarr" and not path.is_dir():
        raise OutputError(f"output {path} is a file: a .zarr output is a folder, and "
                          "--overwrite replaces only a zarr folder. Choose another --out.")
    if suffix == ".zarr" and not any((path / name).is_file() for name in ZARR_METADATA):
        if any(path.iterdir()):  # not written by zarr: replacing it could lose the user's files
            raise OutputError(f"output {path} is a folder of other files, not zarr: "
                              "--overwrite replaces only a zarr folder. Choose another "
                              "--out.")


def _check_writable(path: Path) -> None:
    """Create (and remove) a hidden file next to ``path``: the folder takes new files."""
    probe = partial_path(path)
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise OutputError(f"cannot write in the output folder {path.parent} "
                          f"({exc.strerror or exc}): check its permissions or choose "
                          "another --out.") from exc
    with contextlib.suppress(OSError):
        os.unlink(probe)


def partial_path(path: Path) -> Path:
    """A hidden temporary sibling of ``path`` for writing before the final rename.

    Its name holds this machine and process, so a later run can tell it is abandoned.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove temporary outputs of ``path`` whose run is gone; returns what was removed.

    Gone: a process of this machine that no longer exists, or nothing written for
    :data:`STALE_SECONDS`. Temporary outputs of live runs are kept.
    """
    path = Path(path)
    prefix, now, removed = f".{path.name}.partial-", time.time(), []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for candidate in candidates:
        if _abandoned(candidate, candidate.name[len(prefix):], now):
            remove_partial(candidate)
            removed.append(candidate)
    return removed


def _abandoned(path: Path, tag: str, now: float) -> bool:
    parts = tag.split("-")
    if len(parts) == 3 and parts[0] == _HOST and parts[1].isdigit():
        if not resources.process_alive(int(parts[1])):
            return True
    try:
        members = list(path.rglob("*")) if path.is_dir() and not path.is_symlink() else []
        newest = max(p.lstat().st_mtime for p in [path, *members])
    except (OSError, ValueError):
        return False
    return now - newest > STALE_SECONDS


def labels_chunks(shape: tuple[int, ...], tile: int = LABELS_CHUNK) -> tuple[int, ...]:
    """Zarr chunks of a labels array of ``shape``: one slice deep, at most ``tile`` x
    ``tile`` pixels, so a region of a huge slice is written without the rest of it."""
    shape = tuple(int(n) for n in shape)
    return (1,) * (len(shape) - 2) + tuple(max(1, min(n, tile)) for n in shape[-2:])


def create_zarr_labels(path: Path, shape: tuple[int, ...], dtype,
                       scale: PixelScale | None = None, tile: int = LABELS_CHUNK):
    """An empty zarr labels array at ``path`` (every value 0 until written).

    Parameters
    ----------
    path : Path
        The folder to create (a temporary name, :func:`partial_path`).
    shape : tuple of int
        ``(..., H, W)`` labels shape.
    dtype : numpy dtype
        The labels' dtype (:func:`~.labels.labels_dtype`).
    scale : PixelScale, optional
        Pixel size of the labels' axes: the folder is then an OME-Zarr (NGFF 0.4, zarr
        format 2) group with the array as its level ``0``; without, a zarr array.
    tile : int
        Chunk size along Y and X (:func:`labels_chunks`); chunks never hold more than
        one slice.

    Returns
    -------
    zarr.Array
        The array to write into, region by region (``labels[z, y0:y1, x0:x1] = ...``);
        chunks left at 0 are not stored.
    """
    import zarr

    chunks = labels_chunks(shape, tile)
    if scale is None:
        return zarr.create_array(str(path), shape=shape, dtype=dtype, chunks=chunks,
                                 fill_value=0)
    from .ome_zarr import ngff_attrs

    if len(scale.scale) != len(shape):
        raise ValueError(f"a scale of {len(scale.scale)} axes for labels of shape {shape}.")
    group = zarr.open_group(str(path), mode="w-", zarr_format=2)
    group.attrs.update(ngff_attrs(scale))
    return group.create_array("0", shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                              chunk_key_encoding={"name": "v2", "separator": "/"})


def commit_output(tmp: Path, path: Path, overwrite: bool = False) -> Path:
    """Move a finished temporary output into place (replacing ``path`` if ``overwrite``)."""
    if os.path.lexists(path):
        if not overwrite:
            raise OutputError(f"output {path} appeared during the run: not replacing it.")
        if path.is_dir() and not path.is_symlink():
            old = partial_path(path)
            os.rename(path, old)
            shutil.rmtree(old)
    os.replace(tmp, path)
    return path


def remove_partial(tmp: Path) -> None:
    """Delete a temporary output left by a failed or interrupted run."""
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.lexists(tmp):
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def disk_full_is_output_error(path: Path):
    """Turn a full disk while writing ``path`` into an :class:`OutputError` naming it.

    The caller removes the partial output (``finally: remove_partial``).
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise OutputError(f"the disk filled up while writing {path} ({exc.strerror}); "
                          "the partial output is removed. Free some space or choose another "
                          "--out.") from exc


def write_labels(path: str | Path, labels, overwrite: bool = False,
                 scale: PixelScale | None = None) -> Path:
    """Write ``labels`` to ``.tif`` or ``.zarr`` through a temporary name.

    Parameters
    ----------
    path : str or Path
        Target file (``.tif``/``.tiff``) or folder (``.zarr``).
    labels : array-like
        The labels array ``(..., H, W)`` (numpy, zarr or dask; a zarr output is filled
        one chunk-sized region at a time).
    overwrite : bool
        Replace an existing target.
    scale : PixelScale, optional
        Pixel size of the labels' axes, kept in the output (:func:`create_zarr_labels`;
        a TIFF's resolution tags and description).

    Raises
    ------
    OutputError
        As :func:`check_output`, or the disk filled up (nothing is left behind).
    """
    path = check_output(path, overwrite)
    tmp = partial_path(path)
    try:
        with disk_full_is_output_error(path):
            if path.suffix.lower() == ".zarr":
                target = create_zarr_labels(tmp, tuple(labels.shape), labels.dtype, scale)
                copy_regions(labels, target)
            else:
                import tifffile

                from .pixel_scale import tiff_write_arguments

                tifffile.imwrite(str(tmp), np.asarray(labels), compression="zlib",
                                 **tiff_write_arguments(scale))
            return commit_output(tmp, path, overwrite)
    finally:
        remove_partial(tmp)


def copy_regions(source, target) -> None:
    """``target[...] = source`` one chunk-sized region of ``target`` at a time.

    ``source`` is read region by region too (numpy, zarr or dask), so neither array
    is ever read or written a whole slice at once; regions that are all 0 are skipped
    (the target's chunks start at 0).
    """
    chunks = target.chunks
    ranges = [range(0, n, c) for n, c in zip(target.shape, chunks)]
    for corner in itertools.product(*ranges):
        key = tuple(slice(start, min(start + c, n))
                    for start, c, n in zip(corner, chunks, target.shape))
        block = np.asarray(source[key])
        if block.any():
            target[key] = block
