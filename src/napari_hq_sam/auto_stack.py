"""Segment everything in every 2D slice of an N-D image: the function behind
``hqsam auto`` and the "Segment everything" widget.

The engine does the rest, as for prompted runs: contrast limits shared by the
whole stack (:func:`~napari_hq_sam.engine.image.default_contrast_limits`),
:func:`~napari_hq_sam.engine.stack.model_slice` converts a slice to uint8 RGB, and the
:class:`~napari_hq_sam.engine.segmenter.SliceSegmenter` (so the embedding cache,
in memory or zarr on disk, is reused), and segmented with
:class:`~napari_hq_sam.automatic.AutomaticMaskGenerator`. Ids are unique in the
whole stack: slice after slice, each takes the next ids. With ``stitch=True``
objects overlapping in neighbouring slices (along the last leading axis, z)
share one id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .automatic import AutoMaskConfig, AutomaticMaskGenerator, Cancelled
from .engine.cache import EmbeddingCache
from .engine.image import ImageLayout, default_contrast_limits, describe_layout
from .engine.segmenter import SliceSegmenter
from .engine.stack import model_slice, selected_channel
from .label_ops import LABELS_DTYPE, offset_labels, relabel_consecutive, stitch_slices

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


@dataclass
class AutoRun:
    """Result of :func:`segment_everything`.

    Attributes
    ----------
    labels : np.ndarray
        ``layout.labels_shape`` ``uint32`` labels (e.g. (Z, H, W) or (H, W)); slices
        not processed (not asked for, or cancelled) are 0.
    finished : list of tuple of int
        Leading indices of the slices that were segmented, in order.
    cancelled : bool
        Whether ``should_stop()`` ended the run early.
    config : AutoMaskConfig
        The parameters used.
    n_objects : int
        Number of ids used (ids are ``1..n_objects``).
    """

    labels: np.ndarray
    finished: list[tuple[int, ...]] = field(default_factory=list)
    cancelled: bool = False
    n_objects: int = 0
    config: AutoMaskConfig = field(default_factory=AutoMaskConfig)


def segment_slice(model, image2d: np.ndarray, config: AutoMaskConfig | None = None, *,
                  contrast_limits: tuple[float, float] | None = None,
                  cache: EmbeddingCache | None = None) -> np.ndarray:
    """Labels of one 2D image.

    Parameters
    ----------
    model : HQSam
    image2d : np.ndarray
        (H, W) grey of any numeric dtype, or (H, W, 3|4) RGB(A).
    config : AutoMaskConfig, optional
        Official defaults when None.
    contrast_limits : (lo, hi), optional
        Mapped to 0 and 255; None: the image's own range (napari's default).
    cache : EmbeddingCache, optional
        Embedding cache to look up and fill.

    Returns
    -------
    np.ndarray
        (H, W) ``uint32`` labels, ids consecutive from 1.
    """
    run = segment_everything(model, image2d, config, contrast_limits=contrast_limits,
                             cache=cache)
    return run.labels


def segment_everything(model, image, config: AutoMaskConfig | None = None, *,
                       layout: ImageLayout | None = None,
                       contrast_limits: tuple[float, float] | None = None,
                       slices: Sequence[tuple[int, ...]] | None = None,
                       stitch: bool = False, stitch_iou: float = 0.5,
                       cache: EmbeddingCache | None = None,
                       segmenter: SliceSegmenter | None = None,
                       progress: ProgressFn | None = None,
                       should_stop: StopFn | None = None, **layout_kwargs) -> AutoRun:
    """Automatic masks for every (or some) 2D slice of an image.

    Parameters
    ----------
    model : HQSam or None
        Needed unless ``segmenter`` is given.
    image : array-like
        N-D image (numpy, dask or zarr): leading axes, then Y, X, optionally RGB
        or a channel axis (``rgb``, ``channel_axis``, ``channel``, ``axes`` in
        ``layout_kwargs``, see :func:`~napari_hq_sam.engine.image.describe_layout`).
    config : AutoMaskConfig, optional
        Official defaults when None.
    layout : ImageLayout, optional
        From :func:`~napari_hq_sam.engine.image.describe_layout`; guessed like
        napari when None.
    contrast_limits : (lo, hi), optional
        Shared by all slices; None: napari's default for the whole array.
    slices : sequence of tuple of int, optional
        Leading indices to segment (e.g. ``[(12,)]`` for slice 12 of a z-stack);
        all slices when None.
    stitch : bool
        Give overlapping objects of neighbouring slices one id (3-D labels only).
    stitch_iou : float
        Minimum mask IoU for two objects of neighbouring slices to be one.
    cache : EmbeddingCache, optional
        Embedding cache to look up and fill.
    segmenter : SliceSegmenter, optional
        Reuse one and its cache (e.g. the interactive widget's) instead of
        building one from ``model`` and ``cache``.
    progress : callable, optional
        ``progress(done, total)`` in point batches, after each batch.
    should_stop : callable, optional
        Checked between point batches; True ends the run, keeping finished slices.

    Returns
    -------
    AutoRun
        Labels of shape ``layout.labels_shape``, ids consecutive from 1.
    """
    config = config or AutoMaskConfig()
    layout, limits, indices = plan_run(image, layout, contrast_limits, slices, **layout_kwargs)
    if segmenter is None:
        if model is None:
            raise ValueError("segment_everything needs a model or a segmenter.")
        segmenter = SliceSegmenter(model, cache=cache)
    generator = AutomaticMaskGenerator(segmenter.predictor, config)
    run = AutoRun(np.zeros(layout.labels_shape, dtype=LABELS_DTYPE), config=config)
    steps, total = generator.n_steps, generator.n_steps * len(indices)
    for k, index in enumerate(indices):
        rgb = model_slice(image, layout, index, limits)

        def batch_done(done, _n, base=k * steps):
            if progress is not None:
                progress(base + done, total)
        try:
            if should_stop is not None and should_stop():
                raise Cancelled
            embedding = segmenter.embeddings([rgb])[0]
            masks = generator.generate(rgb, embedding, should_stop, progress=batch_done)
        except Cancelled:
            run.cancelled = True
            break
        add_slice(run, index, masks.to_labels())
    return finish_run(run, stitch, stitch_iou)


def plan_run(image, layout: ImageLayout | None, contrast_limits, slices, **layout_kwargs
             ) -> tuple[ImageLayout, tuple[float, float], list[tuple[int, ...]]]:
    """Layout, contrast limits (the whole image's by default) and slice indices of a run."""
    layout = layout or describe_layout(np.shape(image), **layout_kwargs)
    if contrast_limits is None:
        contrast_limits = default_contrast_limits(selected_channel(image, layout))
    indices = list(layout.slice_indices()) if slices is None else \
        [layout.check_index(i) for i in slices]
    return layout, tuple(contrast_limits), indices


def add_slice(run: AutoRun, index: tuple[int, ...], slice_labels: np.ndarray) -> None:
    """Write one slice's labels (ids 1..n) into ``run`` after the ids used so far."""
    run.labels[index] = offset_labels(slice_labels, run.n_objects)
    run.n_objects += int(slice_labels.max())
    run.finished.append(index)


def finish_run(run: AutoRun, stitch: bool, stitch_iou: float) -> AutoRun:
    """Stitch through z when asked (and the labels have slices)."""
    if stitch and run.labels.ndim >= 3:
        run.labels = _stitch_last_leading_axis(run.labels, stitch_iou)
        run.n_objects = int(run.labels.max())
    return run


def _stitch_last_leading_axis(labels: np.ndarray, iou: float) -> np.ndarray:
    """Stitch along the last leading axis (z) of each outer index (t, ...), ids unique."""
    outer = labels.shape[:-3]
    out = np.zeros_like(labels)
    offset = 0
    for index in np.ndindex(*outer):
        stitched = stitch_slices(labels[index], iou)
        out[index] = offset_labels(stitched, offset)
        offset += int(stitched.max())
    return relabel_consecutive(out)
