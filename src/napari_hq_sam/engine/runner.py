"""The one way work runs over the 2D slices of an N-D image, in this process or on Dask.

A run is a :class:`SliceJob` (what to compute on one slice, and how to write it into
the labels) handed to :func:`run_slices`; :mod:`.distributed` runs the same job with
one Dask task per slice. Prompted stacks (:mod:`.stack`), segment everything
(:mod:`.everything`) and propagation (:mod:`.propagate`) all report through the same
:class:`StackResult` and the same two plain callables:

- ``progress(done, total)``: after each step. A step is one slice for prompted runs
  and propagation, one batch of grid points for segment everything.
- ``should_stop() -> bool``: asked before each slice (and by jobs between their
  steps). True ends the run: ``result.cancelled`` is set, and the slices finished so
  far stay in ``result.labels`` (and in the embedding cache, so a rerun with a disk
  cache resumes where it stopped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import Cancelled, InputError
from .encoder import auto_batch_size
from .image import (
    ImageLayout,
    default_contrast_limits,
    describe_layout,
    model_slice,
    selected_channel,
)
from .tiled import SliceSource

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


@dataclass
class StackResult:
    """What a run over slices produced.

    Attributes
    ----------
    labels : array-like
        Labels of the image's ``labels_shape`` (the array passed in, or a new numpy
        one); slices not processed (not asked for, or cancelled) are untouched.
    slices : list of tuple of int
        Leading indices of the slices written, in the order they were finished.
    objects : int
        Number of distinct objects (prompted objects, or ids found).
    computed, reused : int
        Embeddings computed by the encoder / taken from the cache.
    seconds : float
        Wall time of the run.
    cancelled : bool
        ``should_stop()`` ended the run early.
    scores : dict
        ``(slice index, object id) -> predicted IoU`` where the job knows it.
    """

    labels: Any
    slices: list = field(default_factory=list)
    objects: int = 0
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    scores: dict = field(default_factory=dict)


class SliceJob(Protocol):
    """What a run does on each slice. Jobs must pickle (Dask sends them to workers).

    ``segment`` may run in another process; ``record`` always runs in the calling
    process, in slice order, and is the only place that writes the labels.

    A job with a ``tiling`` attribute (a :class:`~.tiles.Tiling`) that applies to the
    slices gets, instead of a whole uint8 image and its embedding, a
    :class:`~.tiled.SliceSource` to read windows from and ``embedding=None``.
    """

    #: progress steps per slice (1, or e.g. the point batches of segment everything)
    steps: int

    def segment(self, segmenter, index: tuple[int, ...], image: np.ndarray, embedding,
                step: Callable[[int], None] | None, should_stop: ShouldStop | None) -> Any:
        """Compute one slice's output from its uint8 ``(H, W, 3)`` image and embedding.

        ``step(k)`` reports ``k`` steps done within the slice; raise
        :class:`~napari_hq_sam.errors.Cancelled` when ``should_stop()`` says so.
        """

    def record(self, result: StackResult, index: tuple[int, ...], output: Any) -> None:
        """Write one slice's output into ``result.labels`` (and its scores)."""


@dataclass(frozen=True)
class SlicePlan:
    """The checked inputs of a run: layout, contrast limits, the slices to visit."""

    layout: ImageLayout
    contrast_limits: tuple[float, float]
    indices: list[tuple[int, ...]]

    def model_image(self, image, index: tuple[int, ...]) -> np.ndarray:
        """Slice ``index`` of ``image`` as the model's uint8 ``(H, W, 3)`` input."""
        return model_slice(image, self.layout, index, self.contrast_limits)

    def slice_source(self, image, index: tuple[int, ...]) -> SliceSource:
        """Slice ``index`` as a window reader (tiled jobs read only the windows they use)."""
        return SliceSource(image, self.layout, index, self.contrast_limits)

    def tiled(self, job) -> bool:
        """Whether ``job`` tiles this plan's slices (its ``tiling`` applies to their size)."""
        tiling = getattr(job, "tiling", None)
        return tiling is not None and tiling.applies(self.layout.spatial_shape)


def plan_slices(image, *, layout: ImageLayout | None = None,
                contrast_limits: tuple[float, float] | None = None,
                slices: Sequence[tuple[int, ...]] | None = None, **layout_kwargs) -> SlicePlan:
    """Layout, contrast limits and slice indices of a run, checked before any model work.

    Parameters
    ----------
    image : array-like
        N-D image (numpy, dask, zarr).
    layout : ImageLayout, optional
        Default: :func:`~.image.describe_layout` of the image's shape with
        ``layout_kwargs`` (``rgb``, ``channel_axis``, ``channel``, ``axes``).
    contrast_limits : (lo, hi), optional
        Default: the whole image's (napari's default, :func:`~.image.default_contrast_limits`).
    slices : sequence of tuple of int, optional
        Leading indices to visit; default every slice.
    """
    layout = layout or describe_layout(np.shape(image), **layout_kwargs)
    if contrast_limits is None:
        contrast_limits = default_contrast_limits(selected_channel(image, layout),
                                                  rgb=bool(layout.rgb))
    indices = (list(layout.slice_indices()) if slices is None
               else [layout.check_index(i) for i in slices])
    return SlicePlan(layout, tuple(float(v) for v in contrast_limits), indices)


def check_labels(labels, layout: ImageLayout) -> None:
    """Refuse a labels array whose shape is not the image's labels shape."""
    if tuple(labels.shape) != layout.labels_shape:
        raise InputError(f"labels of shape {tuple(labels.shape)} do not match the image's "
                         f"labels shape {layout.labels_shape}.")


def run_slices(job: SliceJob, image, plan: SlicePlan, segmenter, result: StackResult, *,
               batch_size: int | None = None, progress: Progress | None = None,
               should_stop: ShouldStop | None = None) -> StackResult:
    """Run ``job`` on every slice of ``plan`` in this process, writing into ``result``.

    Parameters
    ----------
    job : SliceJob
    image : array-like
        The N-D image the plan was made for.
    plan : SlicePlan
    segmenter : SliceSegmenter
        Embeds slices through its cache and decodes prompts.
    result : StackResult
        Receives labels, finished slices, counters; returned.
    batch_size : int, optional
        Slices embedded at once; default :func:`~.encoder.auto_batch_size` of the
        segmenter's model (1 on CPUs).
    progress, should_stop : callable, optional
        See the module docstring.
    """
    size = auto_batch_size(segmenter.model) if batch_size is None else int(batch_size)
    if size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}.")
    computed0, reused0 = segmenter.computed, segmenter.reused
    total, done = len(plan.indices) * job.steps, 0
    reported = [-1]

    def report(steps_done: int) -> None:  # once per count: jobs may report their last step
        if progress is not None and steps_done != reported[0]:
            reported[0] = steps_done
            progress(steps_done, total)

    def stopping() -> bool:
        return should_stop is not None and should_stop()

    tiled = plan.tiled(job)
    try:
        for first in range(0, len(plan.indices), size):
            batch = plan.indices[first:first + size]
            if stopping():
                raise Cancelled
            if tiled:  # the job embeds the windows it needs, batched per slice
                images = [plan.slice_source(image, index) for index in batch]
                embeddings = [None] * len(batch)
            else:
                images = [plan.model_image(image, index) for index in batch]
                embeddings = segmenter.embeddings(images)
            for index, rgb, embedding in zip(batch, images, embeddings):
                if stopping():
                    raise Cancelled
                output = job.segment(segmenter, index, rgb, embedding,
                                     lambda k, base=done: report(base + k), should_stop)
                job.record(result, index, output)
                done += job.steps
                report(done)
    except Cancelled:
        result.cancelled = True
    result.computed += segmenter.computed - computed0
    result.reused += segmenter.reused - reused0
    return result
