"""Reading images and writing labels for headless runs (TIFF, zarr, npy).

Reading is lazy where the format allows (memory-mapped TIFF and npy, zarr), so a huge
image is not read whole before a run starts; a file that is damaged (truncated,
corrupt) is refused with its name, never returned short.

Outputs are written under a hidden temporary name next to the target
(``.NAME.partial-HOST-PID-XXXXXXXX``) and renamed when complete, so a file or folder
with the requested name is always whole. A run removes the temporary outputs of the
same target left by runs that are gone (killed on this machine, or untouched for
:data:`STALE_SECONDS`). An output is never the run's input, nor inside it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import HQSamError, InputError, MissingFileError, OutputError
from . import resources

IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr", ".npy")
LABEL_SUFFIXES = (".tif", ".tiff", ".zarr")
ZARR_METADATA = ("zarr.json", ".zarray", ".zgroup")
# A temporary output this long untouched belongs to no live run (a run on another
# machine, or a name without a process id).
STALE_SECONDS = 24 * 3600.0
# Words of tifffile's log records about a damaged file (it logs them and reads on,
# e.g. returning fewer pages than the file should hold).
_TIFF_DAMAGE_WORDS = ("corrupt", "truncat", "invalid page offset")
_DISK_FULL = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT")
                       if hasattr(errno, name))
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


# -- reading -----------------------------------------------------------------------------

def read_image(path: str | Path):
    """Open an image lazily where the format allows.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` (memory-mapped when uncompressed), ``.npy``
        (memory-mapped), ``.zarr`` (an array, a group holding one array or OME-Zarr
        level ``0``, or the path of an array inside a group: ``image.zarr/name``).

    Returns
    -------
    array-like
        numpy (possibly memory-mapped) or zarr array of a real numeric or boolean dtype.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    InputError
        A folder that is not zarr, an unknown format, a damaged file, complex or
        non-numeric values, or a compressed TIFF larger than the available memory.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"image {path} does not exist.")
    suffix = ".zarr" if zarr_root(path) is not None else path.suffix.lower()
    if path.is_dir() and suffix != ".zarr":
        raise InputError(_folder_message(path))
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"cannot read {path}: use one of {', '.join(IMAGE_SUFFIXES)}.")
    try:
        image = _open_image(path, suffix)
    except HQSamError:
        raise
    except MemoryError as exc:
        raise InputError(f"not enough memory to read image {path}: save it as an "
                         "uncompressed TIFF or .zarr (read slice by slice).") from exc
    except ValueError as exc:  # the readers' word for a file that is not what its name says
        raise InputError(f"cannot read image {path}: {exc}") from exc
    except (PermissionError, IsADirectoryError, NotADirectoryError):
        raise  # said as they are: the file is fine, its access is not
    except (OSError, EOFError, zlib.error, struct.error) as exc:  # a short or garbled file
        raise InputError(_damaged_message(path, exc)) from exc
    check_image_dtype(path, image.dtype)
    return image


def zarr_root(path: Path) -> Path | None:
    """The ``.zarr`` folder ``path`` is or lies in (``g.zarr`` for ``g.zarr/a``), or None."""
    for candidate in (path, *path.parents):
        if candidate.suffix.lower() == ".zarr":
            return candidate
    return None


def check_image_dtype(path, dtype) -> None:
    """Refuse values the model's input cannot come from (complex, text, objects, dates)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise InputError(f"image {path} holds complex numbers ({dtype}): save its magnitude "
                         "(numpy.abs) or its real part (.real) as the image first.")
    if dtype.kind not in "biuf":
        raise InputError(f"image {path} holds {dtype} values, not numbers: save it as an "
                         "integer, float or boolean image.")


def _folder_message(path: Path) -> str:
    try:
        inside = sorted(p.name for p in path.iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    except OSError:
        inside = []
    example = (f"; it holds {len(inside)} image{'s' * (len(inside) != 1)}, e.g. "
               f"{path / inside[0]}") if inside else ""
    return (f"image {path} is a folder, not an image: give one image file (.tif, .tiff, "
            f".npy) or a .zarr folder{example}.")


def _damaged_message(path: Path, exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    return (f"cannot read image {path}: the file is truncated or damaged ({detail}); "
            "copy or export it again.")


def _open_image(path: Path, suffix: str):
    if suffix in (".tif", ".tiff"):
        return _open_tiff(path)
    if suffix == ".npy":
        return _open_npy(path)
    return _open_zarr(path)


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError as exc:
        if "Python objects" in str(exc):  # never unpickled: that could run code
            raise InputError(f"image {path} holds Python objects, not numbers: save it as "
                             "an integer, float or boolean array.") from exc
        if str(exc).startswith(("EOF", "mmap length")):  # shorter than its header says
            raise InputError(_damaged_message(path, exc)) from exc
        raise


def _open_tiff(path: Path):
    """A memory map of an uncompressed TIFF, else the whole image when it fits in memory."""
    import tifffile

    with _tiff_damage_records() as damage:
        try:
            image = tifffile.memmap(str(path), mode="r")
        except (ValueError, OSError):  # compressed, tiled, scattered pages, or damaged
            try:
                image = _read_tiff(path)
            except (HQSamError, MemoryError, PermissionError):
                raise
            except Exception as exc:  # tifffile's decoders raise many kinds on a bad file
                if isinstance(exc, ValueError) and str(exc).startswith("not a "):
                    raise  # another kind of file: said as it is
                raise InputError(_damaged_message(path, exc)) from exc
    if damage:
        raise InputError(_damaged_message(path, ValueError(damage[0])))
    return image


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        need = resources.array_bytes(series.shape, series.dtype)
        free = resources.available_memory()
        if free is not None and need > free:
            raise InputError(
                f"image {path} ({series.shape} {series.dtype}) is stored compressed or in "
                f"pieces, so it is read whole: {resources.size_text(need)} of memory, "
                f"{resources.size_text(free)} available. Save it as an uncompressed TIFF "
                "(read lazily, slice by slice) or as .zarr.")
        return series.asarray()


@contextlib.contextmanager
def _tiff_damage_records():
    """Collect (and keep off the console) tifffile's log records about a damaged file."""
    logger, found = logging.getLogger("tifffile"), []

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(word in message.lower() for word in _TIFF_DAMAGE_WORDS):
            found.append(message.split("> ", 1)[-1])  # drop tifffile's "<TiffFile 'x'>"
            return False
        return True

    logger.addFilter(keep)
    try:
        yield found
    finally:
        logger.removeFilter(keep)


def _open_zarr(path: Path):
    import zarr

    if not path.is_dir():
        raise InputError(f"image {path} is a file, but a .zarr image is a folder: give the "
                         "folder zarr wrote.")
    if not any((path / name).is_file() for name in ZARR_METADATA):
        raise InputError(f"image {path} is not a zarr array or group (it has no zarr.json, "
                         ".zarray or .zgroup): give a folder written by zarr.")
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    arrays = dict(node.arrays())
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    if "0" in arrays:
        return arrays["0"]
    if arrays:
        names = sorted(arrays)
        raise InputError(f"zarr group {path} holds several arrays ({', '.join(names)}): give "
                         f"the path of one of them, e.g. {path / names[0]}.")
    groups = sorted(name for name, _ in node.groups())
    inside = f" (its groups: {', '.join(groups)}, e.g. {path / groups[0]})" if groups else ""
    raise InputError(f"zarr group {path} holds no array{inside}: give the path of an array "
                     "inside it.")


# -- writing -----------------------------------------------------------------------------

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


def create_zarr_labels(path: Path, shape: tuple[int, ...], dtype) -> object:
    """An empty zarr labels array, one chunk per 2D slice, at ``path``."""
    import zarr

    chunks = (1,) * (len(shape) - 2) + tuple(shape[-2:])
    return zarr.create_array(str(path), shape=shape, dtype=dtype, chunks=chunks, fill_value=0)


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
                create_zarr_labels(tmp, tuple(labels.shape), labels.dtype)[...] = \
                    np.asarray(labels)
            else:
                import tifffile

                tifffile.imwrite(str(tmp), np.asarray(labels), compression="zlib")
            return commit_output(tmp, path, overwrite)
    finally:
        remove_partial(tmp)
