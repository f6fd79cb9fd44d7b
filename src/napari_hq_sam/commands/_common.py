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

    Checked before the model loads, so a typo costs no waiting; None is skipped.
    """
    for path in paths:
        if path is not None and not Path(path).is_file():
            raise MissingFileError(f"{path} does not exist.")


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
