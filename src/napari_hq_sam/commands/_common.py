"""Helpers shared by the subcommands: parsed options to the objects the library takes.

Nothing here imports torch at module level, so building the parser stays fast.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, MissingFileError


def parse_crop(text: str | None) -> tuple[slice, slice] | None:
    """``"Y0:Y1,X0:X1"`` (bounds optional, numpy style) → two slices; None passes through."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise InputError(f"--crop {text!r}: give Y0:Y1,X0:X1, e.g. ':,:256'.")
    out = []
    for part in parts:
        bounds = part.split(":")
        if len(bounds) != 2:
            raise InputError(f"--crop {text!r}: each axis needs START:STOP, e.g. '0:256' or ':'.")
        try:
            out.append(slice(*(int(b) if b.strip() else None for b in bounds)))
        except ValueError as exc:
            raise InputError(f"--crop {text!r}: bounds must be integers.") from exc
    return out[0], out[1]


def read_pair(image_path: str, labels_path: str, crop: tuple[slice, slice] | None):
    """Read an image and its labels into memory, cropped to the Y/X window, and check them.

    Parameters
    ----------
    image_path, labels_path : str
        Files :func:`~napari_hq_sam.engine.io.read_image` opens. The labels are
        ``(..., Y, X)``; the image has the same shape, or one more trailing RGB axis.
    crop : (slice, slice) or None
        The Y and X window, from :func:`parse_crop`.

    Returns
    -------
    image, labels : np.ndarray
        The labels are whole non-negative ids with at least one object, shaped like
        the image (:func:`~napari_hq_sam._groundtruth.check_labels`).
    """
    import numpy as np

    from ..engine.io import read_image

    image, labels = np.asarray(read_image(image_path)), np.asarray(read_image(labels_path))
    if crop is not None:
        labels = labels[(..., *crop)]
        spatial_last = image.ndim == labels.ndim
        image = image[(..., *crop)] if spatial_last else image[(..., *crop, slice(None))]
    if labels.size == 0:
        raise InputError(f"the crop leaves nothing of {labels_path}.")
    from .._groundtruth import check_labels

    where = "" if crop is None else " inside --crop"
    labels = check_labels(labels, image, name=f"labels {labels_path}{where}",
                          image_name=f"image {image_path}{where}", require_objects=True)
    return image, labels


def require_files(*paths: str | None) -> None:
    """Raise a :class:`~napari_hq_sam.errors.MissingFileError` for a named file that is absent.

    Checked before the model loads, so a typo costs no waiting; None is skipped. A
    folder where a file is wanted is an :class:`~napari_hq_sam.errors.InputError`.
    """
    for path in paths:
        if path is None:
            continue
        if Path(path).is_dir():
            raise InputError(f"{path} is a folder, not a file: give the file itself.")
        if not Path(path).is_file():
            raise MissingFileError(f"{path} does not exist.")


def require_model_files(args) -> None:
    """The ``--checkpoint`` and ``--adapter`` files exist (checked before the model loads).

    A checkpoint folder is refused with the name of the file to give.
    """
    from ..model_types import REGISTRY

    checkpoint = args.checkpoint
    if checkpoint is not None and Path(checkpoint).is_dir():
        name = REGISTRY[args.model].filename
        inside = Path(checkpoint) / name
        which = (f"e.g. {inside}" if inside.is_file() else
                 f"the official {args.model} file is {name}, from `hqsam download {args.model}`")
        raise InputError(f"--checkpoint {checkpoint} is a folder, not a file: give the "
                         f"checkpoint file itself ({which}).")
    require_files(checkpoint, getattr(args, "adapter", None))


def run_inputs(args) -> list[tuple[str, str | None]]:
    """Every path a run reads, as ``(what, path)``: image, prompt files, checkpoint,
    adapter, cache folder. An output may be none of them
    (:func:`~napari_hq_sam.engine.io.check_output`).
    """
    return [("image", getattr(args, "image", None)),
            *(("prompt file", p) for p in getattr(args, "prompts", None) or ()),
            ("checkpoint", getattr(args, "checkpoint", None)),
            ("adapter", getattr(args, "adapter", None)),
            ("--cache folder", getattr(args, "cache", None))]


def check_cache_not_input(args) -> None:
    """The ``--cache`` folder (written by the run) is none of its inputs, nor inside one."""
    from ..engine.io import check_not_input

    if getattr(args, "cache", None) is not None:
        inputs = [pair for pair in run_inputs(args) if pair[0] != "--cache folder"]
        check_not_input(args.cache, inputs, name="--cache folder", flag="--cache")


def check_memory(image, layout, contrast_limits, *, labels=None, labels_copies: int = 1,
                 contrast_method: str = "minmax", remote: bool = False,
                 tile: int | None = None) -> None:
    """Refuse a run whose arrays cannot fit in this machine's memory, before any work.

    Parameters
    ----------
    image : array-like
        The image as :func:`~napari_hq_sam.engine.io.read_image` opened it.
    layout : ImageLayout
        Its layout.
    contrast_limits : (lo, hi) or None
        The run's limits (None: napari's default, read from a sample).
    labels : (str, shape, dtype, str) or None
        A labels array held in memory: its output, shape, dtype and what to do
        instead; None when the labels are written slice by slice (a .zarr output).
    labels_copies : int
        Arrays of that size held at once (2 while stitching builds new labels).
    contrast_method : str
        ``"percentile"`` reads the whole image into memory.
    remote : bool
        Slices are converted on a Dask cluster elsewhere: only this machine's own
        arrays are checked.
    tile : int, optional
        A tiled run converts slices one window of at most ``tile`` x ``tile`` pixels
        at a time (:func:`~napari_hq_sam.engine.resources.slice_conversion_bytes`);
        None: whole slices.
    """
    import numpy as np

    from ..engine.image import selected_channel
    from ..engine.resources import (
        array_bytes,
        available_memory,
        size_text,
        slice_conversion_bytes,
    )

    free = available_memory()
    if free is None:
        return
    h, w = layout.spatial_shape
    convert = 0 if remote else slice_conversion_bytes((h, w), image.dtype, layout.rgb,
                                                      contrast_limits, tile=tile)
    if convert > free:
        fits = int(free / (convert / (h * w)))
        raise InputError(f"a slice of {h} x {w} pixels needs about {size_text(convert)} of "
                         f"memory to become the model's input, {size_text(free)} available "
                         f"(slices up to about {fits:,} pixels fit on this machine): crop or "
                         "downsample the image first.")
    held = 0
    if labels is not None:
        out, shape, dtype, instead = labels
        held = labels_copies * array_bytes(shape, dtype)
        if held + convert > free:
            also = "" if held > free else f" ({size_text(held + convert)} with a slice)"
            copies = f" ({labels_copies} copies)" if labels_copies > 1 else ""
            raise InputError(f"the labels of {out} ({tuple(shape)} {np.dtype(dtype)}) take "
                             f"{size_text(held)} of memory{copies}{also}, {size_text(free)} "
                             f"available: {instead}")
    if contrast_limits is None and contrast_method == "percentile":
        channel = selected_channel(image, layout)
        need = 2 * array_bytes(channel.shape, channel.dtype)  # the data and a sorted copy
        if held + need > free:
            raise InputError(f"--contrast percentile reads the whole image into memory "
                             f"({size_text(need)} with its sorted copy), "
                             f"{size_text(free - held)} available: give --contrast-limits "
                             "LOW HIGH, or use --contrast minmax (read from a sample).")


def check_model_inputs(args) -> None:
    """Before the model loads: its files exist, the adapter fits, the ``--cache`` folder
    is this model's (or new)."""
    require_model_files(args)
    if getattr(args, "adapter", None):
        from ..adapters import check_adapter

        check_adapter(args.adapter, args.model, args.checkpoint)
    if getattr(args, "cache", None):
        check_cache_folder(args)


def check_cache_folder(args) -> None:
    """Open an existing ``--cache`` folder for this model, without loading the model.

    The signature is the one the loaded model will have
    (:func:`~napari_hq_sam.engine.cache.model_signature` of the checkpoint file, the
    adapter, ``--model`` and ``--precision``), so a folder of another model is refused
    now. The official checkpoint is downloaded here if it is not cached yet.
    """
    from types import SimpleNamespace

    from ..engine.cache import EmbeddingCache, model_signature
    from ..weights import download_checkpoint

    if not Path(args.cache).expanduser().exists():
        return  # a new folder: nothing to check, made when the run stores an embedding
    checkpoint = args.checkpoint or download_checkpoint(args.model, progress=not args.quiet)
    precision = args.precision
    if precision == "auto":  # the loaded model stores what "auto" resolves to
        from ..device import pick_device
        from ..model.fast import best_precision

        precision = best_precision(pick_device(args.device))
    # model_signature reads a model's type and precision; the weights come from the file
    described = SimpleNamespace(model_type=args.model, precision=precision)
    EmbeddingCache(model_signature(described, checkpoint, getattr(args, "adapter", None)),
                   max_items=0,
                   directory=args.cache)


def run_cache(args):
    """This process's embedding cache of a run with ``--cache``, else None.

    None too on Dask (``--workers``, ``--scheduler``): the workers hold their caches
    and print their own warnings.
    """
    if not getattr(args, "cache", None) or args.workers or args.scheduler:
        return None
    from ..engine.distributed import worker_segmenter

    return worker_segmenter(model_spec(args)).cache


def cache_report(args) -> str:
    """``"; <what went wrong with --cache>"`` for a run's summary line, or ``""``."""
    cache = run_cache(args)
    text = "" if cache is None else cache.report()
    return f"; {text}" if text else ""


def model_spec(args):
    """The :class:`~napari_hq_sam.engine.distributed.ModelSpec` of the parsed options.

    Paths are made absolute, since Dask workers may run in another directory.
    """
    from ..engine.distributed import ModelSpec

    def absolute(p):
        return None if p is None else str(Path(p).resolve())

    return ModelSpec(args.model, absolute(args.checkpoint), args.device, args.precision,
                     adapter=absolute(getattr(args, "adapter", None)),
                     cache_dir=absolute(args.cache), hq_token_only=args.hq_token_only)


def tiling_from_args(args):
    """The run's :class:`~napari_hq_sam.engine.tiles.Tiling` (None with ``--no-tiling``).

    Raises
    ------
    InputError
        A halo that leaves no core in the tile (the message gives the largest halo).
    """
    from ..engine.tiles import Tiling

    if getattr(args, "no_tiling", False):
        return None
    return Tiling(tile=args.tile, halo=args.halo)


def tiling_note(tiling, layout) -> str:
    """``" in 1024 px tiles (halo 128)"`` when the run tiles its slices, else ``""``."""
    if tiling is None or not tiling.applies(layout.spatial_shape):
        return ""
    rows, cols = tiling.grid_shape(layout.spatial_shape)
    return (f" in {tiling.tile} px tiles (halo {tiling.halo}; a slice is {rows} x {cols} "
            "tiles, embeddings count tiles)")


def converted_tile(tiling, layout) -> int | None:
    """Side of the windows a run converts at a time (``check_memory``'s ``tile``).

    None when slices are converted whole (no tiling, or slices no larger than a tile).
    """
    return tiling.tile if tiling is not None and tiling.applies(layout.spatial_shape) else None


def run_into_output(args, out, layout, dtype, run, *, to_zarr: bool):
    """``run(labels)`` writing the labels output ``out``; returns what ``run`` returns.

    With ``to_zarr`` a zarr labels array is made under a temporary name, filled by
    ``run`` region by region and renamed to ``out`` when it returns; else ``run``
    gets None and its result's ``labels`` are written to ``out`` whole. The output
    keeps the image's pixel size; a full disk is an OutputError; a stopped or failed
    run leaves no partial output.
    """
    from ..engine import io

    tmp = io.partial_path(out)
    try:
        with io.disk_full_is_output_error(out):
            scale = io.labels_scale(args.image, layout, args.level)
            labels = (io.create_zarr_labels(tmp, layout.labels_shape, dtype, scale)
                      if to_zarr else None)
            result = run(labels)
            if to_zarr:
                io.commit_output(tmp, out, args.overwrite)
            else:
                io.write_labels(out, result.labels, args.overwrite, scale=scale)
    finally:
        io.remove_partial(tmp)
    return result
