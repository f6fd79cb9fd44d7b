"""Segment everything in every 2D slice of an N-D image: ``hqsam auto`` and its widget.

An :class:`EverythingJob` run by :func:`~.runner.run_slices` (the Dask version is
:func:`~.distributed.segment_everything_distributed`): each slice is embedded through
the segmenter's cache and segmented with
:class:`~napari_hq_sam.automatic.AutomaticMaskGenerator`. Ids are unique in the whole
stack: slice after slice, each takes the next ids. With ``stitch=True`` objects
overlapping in neighbouring slices (along the last leading axis, z) share one id.

With ``seeds=`` a :class:`SeededJob` replaces the grid by one prompt per seed (found
in each slice, or given per slice; :mod:`.seeds`) decoded by
:class:`~napari_hq_sam.automatic_seeded.SeededMaskGenerator`, with the same filters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..automatic import AutoMaskConfig, AutomaticMaskGenerator
from ..automatic_seeded import SeededMaskGenerator
from ..errors import InputError
from .cache import EmbeddingCache
from .everything_tiled import segment_everything_tiled
from .image import ImageLayout
from .labels import LABELS_DTYPE, offset_labels, relabel_consecutive, stitch_slices
from .runner import Progress, ShouldStop, StackResult, plan_slices, run_slices
from .seeds import GivenSeeds, ImageSeeds
from .segmenter import SliceSegmenter
from .tiles import DEFAULT_TILING, Tiling

# progress steps of a seeded slice (its number of seeds is known only once it runs)
SEEDED_STEPS = 10


@dataclass(frozen=True)
class EverythingJob:
    """Automatic masks of each slice, written after the ids of the slices before it.

    Attributes
    ----------
    config : AutoMaskConfig
        Generator parameters.
    tiling : Tiling or None
        Slices longer than a tile are segmented tile by tile at native resolution and
        merged without seams (:mod:`.everything_tiled`); None resizes them whole.
    """

    config: AutoMaskConfig
    tiling: Tiling | None = None

    @property
    def steps(self) -> int:
        """Point batches per slice (the unit of progress)."""
        return self.config.n_steps

    def segment(self, segmenter, index, image, embedding, step, should_stop) -> np.ndarray:
        """``(H, W)`` uint32 labels of one slice, ids ``1..n``."""
        if embedding is None:  # a tiled slice: ``image`` reads windows
            return segment_everything_tiled(self, segmenter, index, image, self.tiling,
                                            step, should_stop)
        return self.segment_image(segmenter, index, image, embedding, step, should_stop)

    def segment_image(self, segmenter, index, image, embedding, step, should_stop
                      ) -> np.ndarray:
        """``(H, W)`` uint32 labels of one image seen whole by the model, ids ``1..n``."""
        generator = AutomaticMaskGenerator(segmenter.predictor, self.config)
        report = None if step is None else (lambda done, _total: step(done))
        return generator.generate(image, embedding, should_stop, progress=report).to_labels()

    def record(self, result: StackResult, index, output: np.ndarray) -> None:
        result.labels[index] = offset_labels(output, result.objects)
        result.objects += int(output.max())
        result.slices.append(index)


@dataclass(frozen=True)
class SeededJob(EverythingJob):
    """Masks at the seeds of each slice, written after the ids of the slices before it.

    Attributes
    ----------
    config : AutoMaskConfig
        Filters and decoder settings (the grid settings are not used).
    seeds : ImageSeeds or GivenSeeds
        Where the seeds come from.
    box : bool
        Decode each seed with a box of the expected diameter too.
    """

    seeds: ImageSeeds | GivenSeeds = ImageSeeds()
    box: bool = False

    @property
    def steps(self) -> int:
        """Progress steps per slice."""
        return SEEDED_STEPS

    def segment_image(self, segmenter, index, image, embedding, step, should_stop
                      ) -> np.ndarray:
        """``(H, W)`` uint32 labels of one image, one id per kept seed, ids ``1..n``."""
        if isinstance(self.seeds, GivenSeeds):
            seeds, diameter = self.seeds.seeds(image, index)
        else:
            seeds, diameter = self.seeds.seeds(image)
        generator = SeededMaskGenerator(segmenter.predictor, self.config, box=self.box)
        total = generator.n_steps(len(seeds))
        report = None if step is None else (
            lambda done, _total: step(done * SEEDED_STEPS // max(total, 1)))
        masks = generator.generate(image, seeds, diameter, embedding, should_stop, report)
        if step is not None:
            step(SEEDED_STEPS)
        return masks.to_labels()


def empty_run(labels_shape: tuple[int, ...], labels=None) -> StackResult:
    """A result with zeroed uint32 labels (or ``labels``, checked), ids numbered from 1.

    ``labels`` may be any array of ``labels_shape`` written slice by slice, e.g. a
    zarr array, so that a stack's labels never need to fit in memory (not with
    ``stitch``, which relabels the whole stack).
    """
    if labels is None:
        return StackResult(np.zeros(labels_shape, dtype=LABELS_DTYPE))
    if tuple(labels.shape) != tuple(labels_shape):
        raise InputError(f"labels of shape {tuple(labels.shape)} do not match the image's "
                         f"labels shape {tuple(labels_shape)}.")
    if np.dtype(labels.dtype) != LABELS_DTYPE:
        raise InputError(f"labels for segment everything must be {LABELS_DTYPE}, got "
                         f"{labels.dtype}.")
    return StackResult(labels)


def segment_everything(model, image, config: AutoMaskConfig | None = None, *,
                       layout: ImageLayout | None = None,
                       contrast_limits: tuple[float, float] | None = None,
                       slices: Sequence[tuple[int, ...]] | None = None,
                       stitch: bool = False, stitch_iou: float = 0.5,
                       cache: EmbeddingCache | None = None,
                       segmenter: SliceSegmenter | None = None,
                       batch_size: int | None = None, progress: Progress | None = None,
                       should_stop: ShouldStop | None = None,
                       seeds: ImageSeeds | GivenSeeds | None = None, seed_box: bool = False,
                       tiling: Tiling | None = DEFAULT_TILING, labels=None,
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
        ``progress(done, total)`` in point batches (seeded: :data:`SEEDED_STEPS` per
        slice); ``should_stop()`` between point batches ends the run, keeping
        finished slices (see :mod:`.runner`).
    seeds : ImageSeeds or GivenSeeds, optional
        One prompt per seed instead of the grid: :class:`~.seeds.ImageSeeds` finds
        them in each slice (``ImageSeeds(diameter=20)``), :class:`~.seeds.GivenSeeds`
        takes them per slice index (e.g. from a points file).
    seed_box : bool
        With seeds: decode each with a box of the expected diameter as well.
    tiling : Tiling or None
        Slices longer than ``tiling.tile`` on a side are segmented tile by tile at
        native resolution, objects merged across tiles with one id each
        (:mod:`.everything_tiled`); None resizes every slice to the model input.
    labels : array-like, optional
        uint32 array of the labels shape to write each slice into as it finishes
        (e.g. a zarr array: the stack's labels then never sit in memory); not with
        ``stitch``. Default a new numpy array.

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
    job = (EverythingJob(config, tiling) if seeds is None
           else SeededJob(config, tiling, seeds=seeds, box=seed_box))
    result = run_slices(job, image, plan, segmenter,
                        run_labels(plan, labels, stitch), batch_size=batch_size,
                        progress=progress, should_stop=should_stop)
    finish_everything(result, stitch, stitch_iou)
    result.seconds = time.perf_counter() - start
    return result


def run_labels(plan, labels, stitch: bool) -> StackResult:
    """The result a run fills: :func:`empty_run`, refusing ``labels`` with ``stitch``."""
    if labels is not None and stitch:
        raise InputError("stitching relabels the whole stack in memory: give no labels "
                         "array with stitch=True.")
    return empty_run(plan.layout.labels_shape, labels)


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
