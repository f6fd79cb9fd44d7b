"""Segment everything in every 2D slice of an N-D image: ``hqsam auto`` and its widget.

An :class:`EverythingJob` run by :func:`~.runner.run_slices` (the Dask version is
:func:`~.distributed.segment_everything_distributed`): each slice is embedded through
the segmenter's cache and segmented with
:class:`~napari_hq_sam.automatic.AutomaticMaskGenerator`. Ids are unique in the whole
stack: slice after slice, each takes the next ids. With ``stitch=True`` objects
overlapping in neighbouring slices (along the last leading axis, z) share one id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..automatic import AutoMaskConfig, AutomaticMaskGenerator
from ..errors import InputError
from .cache import EmbeddingCache
from .image import ImageLayout
from .labels import LABELS_DTYPE, offset_labels, relabel_consecutive, stitch_slices
from .runner import Progress, ShouldStop, StackResult, plan_slices, run_slices
from .segmenter import SliceSegmenter


@dataclass(frozen=True)
class EverythingJob:
    """Automatic masks of each slice, written after the ids of the slices before it.

    Attributes
    ----------
    config : AutoMaskConfig
        Generator parameters.
    """

    config: AutoMaskConfig

    @property
    def steps(self) -> int:
        """Point batches per slice (the unit of progress)."""
        return self.config.n_steps

    def segment(self, segmenter, index, image, embedding, step, should_stop) -> np.ndarray:
        """``(H, W)`` uint32 labels of one slice, ids ``1..n``."""
        generator = AutomaticMaskGenerator(segmenter.predictor, self.config)
        report = None if step is None else (lambda done, _total: step(done))
        return generator.generate(image, embedding, should_stop, progress=report).to_labels()

    def record(self, result: StackResult, index, output: np.ndarray) -> None:
        result.labels[index] = offset_labels(output, result.objects)
        result.objects += int(output.max())
        result.slices.append(index)


def empty_run(labels_shape: tuple[int, ...]) -> StackResult:
    """A result with zeroed uint32 labels, ids to be numbered from 1."""
    return StackResult(np.zeros(labels_shape, dtype=LABELS_DTYPE))


def segment_everything(model, image, config: AutoMaskConfig | None = None, *,
                       layout: ImageLayout | None = None,
                       contrast_limits: tuple[float, float] | None = None,
                       slices: Sequence[tuple[int, ...]] | None = None,
                       stitch: bool = False, stitch_iou: float = 0.5,
                       cache: EmbeddingCache | None = None,
                       segmenter: SliceSegmenter | None = None,
                       batch_size: int | None = None, progress: Progress | None = None,
                       should_stop: ShouldStop | None = None,
                       **layout_kwargs) -> StackResult:
    """Automatic masks for every (or some) 2D slice of an image.

    Parameters
    ----------
    model : HQSam or None
        Needed unless ``segmenter`` is given.
    image : array-like
        N-D image (numpy, dask or zarr): leading axes, then Y, X, optionally RGB
        or a channel axis (``rgb``, ``channel_axis``, ``channel``, ``axes`` in
        ``layout_kwargs``, see :func:`~.image.describe_layout`). A single 2D image
        works too.
    config : AutoMaskConfig, optional
        Official defaults when None.
    layout : ImageLayout, optional
        Guessed like napari when None.
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
    batch_size : int, optional
        Slices embedded at once (default from free GPU memory, 1 on CPUs).
    progress, should_stop : callable, optional
        ``progress(done, total)`` in point batches; ``should_stop()`` between point
        batches ends the run, keeping finished slices (see :mod:`.runner`).

    Returns
    -------
    StackResult
        uint32 labels of shape ``layout.labels_shape``, ids consecutive from 1;
        ``objects`` is the number of ids.
    """
    start = time.perf_counter()
    config = config or AutoMaskConfig()
    plan = plan_slices(image, layout=layout, contrast_limits=contrast_limits, slices=slices,
                       **layout_kwargs)
    if segmenter is None:
        if model is None:
            raise InputError("segment_everything needs a model or a segmenter.")
        segmenter = SliceSegmenter(model, cache=cache)
    result = run_slices(EverythingJob(config), image, plan, segmenter,
                        empty_run(plan.layout.labels_shape), batch_size=batch_size,
                        progress=progress, should_stop=should_stop)
    finish_everything(result, stitch, stitch_iou)
    result.seconds = time.perf_counter() - start
    return result


def finish_everything(result: StackResult, stitch: bool, stitch_iou: float) -> None:
    """Stitch through z when asked (and the labels have slices)."""
    if stitch and result.labels.ndim >= 3:
        result.labels = _stitch_last_leading_axis(result.labels, stitch_iou)
        result.objects = int(result.labels.max())


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
