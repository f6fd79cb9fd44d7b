"""Reading images for headless runs (TIFF, zarr, OME-Zarr, npy), lazily and checked.

Nothing is read whole that need not be: an uncompressed TIFF and an ``.npy`` are
memory-mapped, a compressed or tiled TIFF larger than :data:`READ_WHOLE_BYTES` is a
zarr view of its pieces (tifffile's ``aszarr``: reading a window decodes only the
tiles or strips it touches), a zarr array is used as it is, and an OME-Zarr image
gives one level's array (level 0 by default). A file that is damaged (truncated,
corrupt) is refused with its name, never returned short.

Besides the pixels, an image may record its physical pixel size
(:func:`image_scale`), which labels outputs keep, and an OME-Zarr pyramid gives
contrast limits from its smallest level (:func:`pyramid_contrast_limits`), as napari
does for a multiscale layer.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import HQSamError, InputError, MissingFileError
from . import resources
from .pixel_scale import PixelScale, tiff_scale

IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr", ".npy")
ZARR_METADATA = ("zarr.json", ".zarray", ".zgroup")
# A compressed TIFF up to this size is decoded whole once (every piece checked then);
# a larger one is read piece by piece as the run needs it.
READ_WHOLE_BYTES = 256 * 2 ** 20
# A piece (tile, strip, page) larger than this is decoded again for every window read
# from it: such a TIFF is read whole when it fits in memory.
LAZY_PIECE_BYTES = 64 * 2 ** 20
# Words of tifffile's log records about a damaged file (it logs them and reads on,
# e.g. returning fewer pages than the file should hold).
_TIFF_DAMAGE_WORDS = ("corrupt", "truncat", "invalid page offset")


def read_image(path: str | Path, level: int | None = None):
    """Open an image lazily where the format allows.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` (memory-mapped when uncompressed and contiguous, else read
        piece by piece when large), ``.npy`` (memory-mapped), ``.zarr`` (an array, an
        OME-Zarr image group, a group holding one array, or the path of an array
        inside a group: ``image.zarr/name``).
    level : int, optional
        Resolution level of an OME-Zarr image (0, the default, is the full
        resolution). Only OME-Zarr images have levels.

    Returns
    -------
    array-like
        numpy (possibly memory-mapped) or zarr array of a real numeric or boolean
        dtype, in the file's axis order.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    InputError
        A folder that is not zarr, an unknown format, a damaged file, complex or
        non-numeric values, a level that does not exist (the message lists those
        that do) or of an image without levels, or a TIFF stored in pieces too large
        to decode within the available memory.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"image {path} does not exist.")
    suffix = ".zarr" if zarr_root(path) is not None else path.suffix.lower()
    if path.is_dir() and suffix != ".zarr":
        raise InputError(_folder_message(path))
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"cannot read {path}: use one of {', '.join(IMAGE_SUFFIXES)}.")
    if level is not None and suffix != ".zarr":
        raise InputError(f"image {path} has one resolution: levels (--level) exist only in "
                         "OME-Zarr images. Drop --level, or give an OME-Zarr image.")
    try:
        image = _open_image(path, suffix, level)
    except HQSamError:
        raise
    except MemoryError as exc:
        raise InputError(f"not enough memory to read image {path}: save it as an "
                         "uncompressed TIFF or .zarr (read slice by slice).") from exc
    except ValueError as exc:  # the readers' word for a file that is not what its name says
        raise InputError(f"cannot read image {path}: {exc}") from exc
    except (PermissionError, IsADirectoryError, NotADirectoryError):
        raise  # said as they are: the file is fine, its access is not
    except (OSError, EOFError, IndexError, zlib.error, struct.error) as exc:  # short or garbled
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


def _open_image(path: Path, suffix: str, level: int | None):
    if suffix in (".tif", ".tiff"):
        return _open_tiff(path)
    if suffix == ".npy":
        return _open_npy(path)
    return _open_zarr(path, level)


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


# -- TIFF --------------------------------------------------------------------------------

def _open_tiff(path: Path):
    """A memory map of an uncompressed TIFF, else its pieces (or the whole image)."""
    import tifffile

    with _tiff_damage_records() as damage:
        try:
            image = tifffile.memmap(str(path), mode="r")
        except (ValueError, OSError):  # compressed, tiled, scattered pages, or damaged
            try:
                image = _open_tiff_pieces(path)
            except (HQSamError, MemoryError, PermissionError):
                raise
            except Exception as exc:  # tifffile's decoders raise many kinds on a bad file
                if isinstance(exc, ValueError) and str(exc).startswith("not a "):
                    raise  # another kind of file: said as it is
                raise InputError(_damaged_message(path, exc)) from exc
    if damage:
        raise InputError(_damaged_message(path, ValueError(damage[0])))
    return image


def _open_tiff_pieces(path: Path):
    """A TIFF that cannot be memory-mapped: whole when small, else a zarr view of its pieces.

    The view decodes a piece (tile, strip) when a read touches it; its first and last
    pieces are decoded now and every piece must lie inside the file, so a truncated
    or garbled file is refused here rather than in the middle of a run.
    """
    import tifffile
    import zarr

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        need = resources.array_bytes(series.shape, series.dtype)
        free = resources.available_memory()
        if need <= READ_WHOLE_BYTES and (free is None or 2 * need <= free):
            return series.asarray()
        _check_pieces_inside(path, series)
        image = zarr.open(series.aszarr(level=0), mode="r")
        piece = resources.array_bytes(image.chunks, image.dtype)
        lazy = piece <= LAZY_PIECE_BYTES and (free is None or 8 * piece <= free)
        if not lazy and free is not None and need > free:
            raise InputError(
                f"image {path} ({series.shape} {series.dtype}) is stored compressed in "
                f"pieces of {resources.size_text(piece)}, too large to read piece by piece, "
                f"so it is read whole: {resources.size_text(need)} of memory, "
                f"{resources.size_text(free)} available. Save it as a tiled TIFF (e.g. "
                "1024 x 1024 tiles), an uncompressed TIFF or .zarr.")
        if not lazy:
            return series.asarray()
    # read once the file is closed: the view opens it again (and keeps it) on first use
    for corner in ((0,) * image.ndim, tuple(n - 1 for n in image.shape)):
        np.asarray(image[corner])  # decodes the piece holding it
    return image


def _check_pieces_inside(path: Path, series) -> None:
    """Every stored piece of ``series`` ends inside the file (a truncated file does not)."""
    size = path.stat().st_size
    for number, page in enumerate(series.pages):
        if page is None:
            continue
        ends = (np.asarray(page.dataoffsets, np.int64)
                + np.asarray(page.databytecounts, np.int64))
        if ends.size and int(ends.max()) > size:
            raise InputError(_damaged_message(path, ValueError(
                f"page {number} has data up to byte {int(ends.max())}, the file has {size}")))


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


# -- zarr and OME-Zarr -------------------------------------------------------------------

def _open_zarr(path: Path, level: int | None):
    import zarr

    from .ome_zarr import open_level, read_multiscale

    if not path.is_dir():
        raise InputError(f"image {path} is a file, but a .zarr image is a folder: give the "
                         "folder zarr wrote.")
    if not any((path / name).is_file() for name in ZARR_METADATA):
        raise InputError(f"image {path} is not a zarr array or group (it has no zarr.json, "
                         ".zarray or .zgroup): give a folder written by zarr.")
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        if level is not None:
            raise InputError(f"image {path} is one zarr array, without levels: give its "
                             "OME-Zarr group with --level N, or drop --level.")
        return node
    multiscale = read_multiscale(path, node)
    if multiscale is not None:
        return open_level(path, node, multiscale, level)
    if level is not None:
        raise InputError(f"zarr group {path} is not an OME-Zarr image (its attributes have "
                         "no multiscales), so it has no levels: drop --level, or give the "
                         "path of an array inside it.")
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


def _multiscale_at(path: Path):
    """``(multiscale, group, level)`` of an OME-Zarr image group or of one of its level
    arrays (``level`` is that array's, None for the group), else None."""
    import zarr

    from .ome_zarr import read_multiscale

    if zarr_root(path) is None or not path.is_dir():
        return None
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Group):
        found = read_multiscale(path, node)
        return None if found is None else (found, node, None)
    parent = path.parent
    if zarr_root(parent) is None or not any((parent / n).is_file() for n in ZARR_METADATA):
        return None
    group = zarr.open(str(parent), mode="r")
    found = read_multiscale(parent, group) if isinstance(group, zarr.Group) else None
    level = None if found is None else found.level_of(path.name)
    return None if level is None else (found, group, level)


# -- what else an image file says --------------------------------------------------------

def image_scale(path: str | Path, level: int | None = None) -> PixelScale | None:
    """The physical pixel size of the image :func:`read_image` opens, or None if unknown.

    Parameters
    ----------
    path : str or Path
        An image :func:`read_image` opened without error.
    level : int, optional
        The OME-Zarr level read (default 0).

    Returns
    -------
    PixelScale or None
        One entry per axis of the image, from the OME-Zarr level's
        ``coordinateTransformations`` and ``axes``, or a TIFF's ImageJ metadata or
        resolution tags; None for ``.npy``, plain zarr and TIFFs that say nothing.
    """
    import tifffile

    path = Path(path)
    try:
        if zarr_root(path) is not None:
            found = _multiscale_at(path)
            if found is None:
                return None
            multiscale, _, own = found
            chosen = own if own is not None else (level or 0)
            return multiscale.scales[chosen] if chosen < len(multiscale.scales) else None
        if path.suffix.lower() in (".tif", ".tiff"):
            with _tiff_damage_records(), tifffile.TiffFile(str(path)) as tif:
                return tiff_scale(tif, tif.series[0])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # a scale is extra: the image itself was read, so the run goes on
    return None


def labels_scale(path: str | Path, layout, level: int | None = None) -> PixelScale | None:
    """:func:`image_scale` for the labels of ``layout`` (no channel or RGB axis), or None.

    Parameters
    ----------
    path, level
        As :func:`image_scale`.
    layout : ImageLayout
        The layout of the image read from ``path``.
    """
    scale = image_scale(path, level)
    if scale is None or len(scale.scale) != len(layout.shape):
        return None
    return scale.of_labels(layout)


def pyramid_contrast_limits(path: str | Path, layout,
                            method: str = "minmax") -> tuple[float, float] | None:
    """Contrast limits of an OME-Zarr pyramid from its smallest level, or None.

    napari gives a multiscale layer the limits of its smallest level, so runs on any
    level of the image convert it like the viewer does, and never read the full
    resolution for them.

    Parameters
    ----------
    path : str or Path
        The image (its group, or one of its level arrays).
    layout : ImageLayout
        The layout of the level being segmented (channel and RGB axes apply to the
        smallest level alike).
    method : str
        As :func:`~.image.default_contrast_limits`.

    Returns
    -------
    (lo, hi) or None
        None when ``path`` is not an OME-Zarr image of two levels or more, or when
        the smallest level does not fit the layout (or, for ``"percentile"``, the
        available memory): the caller falls back to the image's own limits.
    """
    from .image import default_contrast_limits, describe_layout, selected_channel
    from .ome_zarr import open_level

    path = Path(path)
    try:
        found = _multiscale_at(path)
    except (OSError, ValueError, KeyError):
        return None
    if found is None or len(found[0].paths) < 2:
        return None
    multiscale, group, _ = found
    smallest = open_level(multiscale.path, group, multiscale, len(multiscale.paths) - 1)
    if smallest.ndim != len(layout.shape):
        return None
    try:
        small_layout = describe_layout(smallest.shape, rgb=layout.rgb,
                                       channel_axis=layout.channel_axis, channel=layout.channel)
    except InputError:
        return None
    channel = selected_channel(smallest, small_layout)
    free = resources.available_memory()
    if method == "percentile" and free is not None and \
            2 * resources.array_bytes(channel.shape, channel.dtype) > free:
        return None
    return default_contrast_limits(channel, method, rgb=layout.rgb)
