"""Refine every object of an existing labels image with HQ-SAM, keeping each object's id.

Each object of each 2D slice becomes one prompt, and all prompts of a slice are decoded
in batches on the slice's embedding:

- its tight **box** (XYXY, max inclusive);
- its **mask** as SAM's ``mask_input``: low-resolution *logits* in the model's 256 x 256
  frame (:func:`mask_logits`). SAM was trained to take its own previous logits there, so
  the mask is made to look like them: the object's area coverage of each low-resolution
  pixel, as a logit clipped at ``±log((1 - eps) / eps)`` (about ±6.9), so the zero level
  runs along the object's boundary with sub-pixel accuracy instead of the staircase of a
  thresholded mask (the mask encoder's first layers are a strided convolution and a
  LayerNorm over 4 channels, so past a few units the magnitude hardly matters: the sign
  pattern and where it changes do); the padding of a non-square frame is 0 (micro-sam
  reports that SAM reads a padding of confident background badly on the released
  weights). The box leads
  and the mask disambiguates which object in the box is meant, as in micro-sam's
  ``segment_from_mask`` (box and mask, no points, by default);
- optionally its most **interior point** (maximum of the distance transform), a positive
  click that helps objects whose box holds more of a neighbour than of themselves.

Single-mask output is used (SAM's advice for box and mask prompts) and, by default, the
HQ mask alone (``hq_token_only``, the authors' advice for single objects and how HQ-SAM
is evaluated from boxes).

**What counts as refined.** A predicted mask keeps only its 8-connected parts that touch
the object's source mask (a fragment elsewhere in the box is another object). The object
keeps its source mask, and is listed in :attr:`RefineResult.kept` with its reason, when
the mask is empty (``"empty"``), its IoU with the source mask is below ``iou_threshold``
or it does not touch the source at all (``"moved"``: HQ-SAM segmented something else),
or SAM's predicted IoU is below ``score_threshold`` (``"low score"``; checked after the
no-overlap case and before the IoU threshold).

**No overlaps.** Per slice, each pixel goes to one object: an object that kept its
source mask keeps all of it; otherwise the object whose source mask held the pixel keeps
it if its refined mask claims it; otherwise the claiming object with the higher predicted
IoU (ties: the lower id). A pixel no object claims is background (a refined object
releases pixels of its source mask that its new mask leaves out). An object left without
any pixel by these rules keeps its source mask (``"overlapped"``). So every slice keeps
exactly its set of ids.

Slices larger than the model input are refined tile by tile at native resolution
(:func:`refine_slice_tiled`): each object in the tile that holds it, so a nucleus of a
20000-pixel slice is seen at the resolution it was drawn at.

A :class:`RefineJob` runs through :func:`~.runner.run_slices` (progress, cancel, caching
as every run over slices) or :func:`~.distributed.run_slices_distributed`
(:func:`refine_labels_distributed`); :func:`refine_labels` is the entry point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .labels import labels_dtype
from .refine_judge import (  # noqa: F401  (EMPTY..MOVED: the reasons, re-exported)
    EMPTY,
    LOW_SCORE,
    MOVED,
    OVERLAPPED,
    REASONS,
    _Candidate,
    judge,
    resolve_overlaps,
    touching_source,
)
from .refine_prompts import (  # noqa: F401  (mask_logits, interior_point: re-exported)
    batch_size_for,
    decode_batch,
    interior_point,
    mask_logits,
    object_prompts,
    object_windows,
)
from .refine_slice import (  # noqa: F401  (TILE_MARGIN, KeptObject: re-exported)
    TILE_MARGIN,
    KeptObject,
    SliceRefinement,
    refine_slice,
    refine_slice_tiled,
)
from .runner import Progress, ShouldStop, SlicePlan, StackResult, plan_slices, run_slices
from .tiles import DEFAULT_TILING


@dataclass
class RefineResult(StackResult):
    """A :class:`~.runner.StackResult` with what refinement did.

    Attributes
    ----------
    labels : array-like
        The refined labels: same shape and dtype as the source; slices not reached
        (cancelled, not asked for) hold the source labels.
    objects : int
        Objects to refine, counted per slice (an id on 3 slices counts 3).
    refined : int
        Objects (per slice) that took their HQ mask.
    kept : list of KeptObject
        Objects (per slice) that kept their source mask, with the reason.
    """

    refined: int = 0
    kept: list = field(default_factory=list)

    def kept_reasons(self) -> dict[str, int]:
        """``{reason: count}`` of :attr:`kept`, in the order of :data:`REASONS`."""
        counts = {r: 0 for r in REASONS}
        for k in self.kept:
            counts[k.reason] += 1
        return {r: n for r, n in counts.items() if n}


# -- runs over slices ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RefineJob:
    """Refine the objects of each slice of ``source`` (a :class:`~.runner.SliceJob`).

    Attributes
    ----------
    source : array-like
        The source labels (the image's labels shape); read one slice at a time.
    score_threshold, iou_threshold, use_mask, use_point, hq_token_only, batch_size
        As in :func:`refine_slice`.
    steps : int
        Progress steps per slice (decoder calls of a single slice, else 1).
    tiling : Tiling or None
        Slices larger than a tile are refined window by window at native resolution
        (:func:`refine_slice_tiled`); None resizes every slice whole to the model input.
    """

    source: object
    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    use_mask: bool = True
    use_point: bool = False
    hq_token_only: bool = True
    batch_size: int = 32
    steps: int = 1
    tiling: object = None

    def segment(self, segmenter, index, image, embedding, step, should_stop) -> SliceRefinement:
        options = dict(score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                       use_mask=self.use_mask, use_point=self.use_point,
                       hq_token_only=self.hq_token_only, batch_size=self.batch_size,
                       index=index, step=step, steps=self.steps, should_stop=should_stop)
        source = np.asarray(self.source[index])
        if embedding is None:  # a tiled slice (see SliceJob): the windows are embedded here
            return refine_slice_tiled(segmenter, image, source, self.tiling, **options)
        segmenter.set_embedding(embedding)
        return refine_slice(segmenter.predictor, source, **options)

    def record(self, result: RefineResult, index, output: SliceRefinement) -> None:
        result.labels[index] = output.labels
        result.slices.append(index)
        result.refined += len(output.refined)
        result.kept.extend(output.kept)
        for object_id, score in output.scores.items():
            result.scores[(index, object_id)] = score


def check_source(labels, layout, name: str = "labels") -> np.ndarray:
    """The source labels as an integer numpy array of the image's labels shape.

    Whole-number floats become the narrowest labels dtype holding their ids.

    Raises
    ------
    InputError
        Another shape, non-integer values, negative ids, or no object at all.
    """
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(layout.labels_shape):
        raise InputError(f"{name} of shape {tuple(labels.shape)} do not match the image's "
                         f"labels shape {tuple(layout.labels_shape)}: give the labels of this "
                         "image.")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        if not finite.all() or not np.array_equal(labels, np.round(labels)):
            raise InputError(f"{name} hold values that are not whole-number ids: labels are "
                             "integer object ids, 0 = background.")
        if labels.size and labels.min() < 0:
            raise InputError(f"{name} hold negative ids: relabel them (0 = background).")
        labels = labels.astype(labels_dtype(int(labels.max()) if labels.size else 0))
    elif labels.dtype.kind not in "iu":
        raise InputError(f"{name} have type {labels.dtype}: labels are integer object ids, "
                         "0 = background.")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InputError(f"{name} hold negative ids (lowest {labels.min()}): ids are 0 for "
                         "background and positive for objects; relabel them.")
    if not labels.any():
        raise InputError(f"{name} hold no objects (every value is 0): nothing to refine.")
    return labels


def check_settings(score_threshold: float, iou_threshold: float, batch_size: int) -> None:
    """Refuse thresholds out of range (or NaN) and batch sizes below 1.

    ``score_threshold`` may go down to -1 (no object is kept for its score: an
    untrained model predicts IoUs below 0); ``iou_threshold`` is from 0 to 1.
    """
    if not -1.0 <= float(score_threshold) <= 1.0:
        raise InputError(f"score_threshold must be from -1 to 1, got {score_threshold!r}.")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise InputError(f"iou_threshold must be from 0 to 1, got {iou_threshold!r}.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")


def prepare_refine(image, labels, *, slices: Sequence[tuple[int, ...]] | None = None,
                   out=None, score_threshold: float = 0.5, iou_threshold: float = 0.5,
                   use_mask: bool = True, use_point: bool = False, hq_token_only: bool = True,
                   batch_size: int = 32, tiling=None, **plan_kwargs
                   ) -> tuple[SlicePlan, RefineJob, RefineResult]:
    """Plan, job and result of a refinement, checked before any model work.

    The plan visits the slices (of ``slices``, default all) that hold objects. The result's
    labels are ``out`` (filled with the source first) or a copy of the source.
    """
    check_settings(score_threshold, iou_threshold, batch_size)
    plan = plan_slices(image, slices=slices, **plan_kwargs)
    source = check_source(labels, plan.layout)
    indices = [i for i in plan.indices if source[i].any()]
    objects = sum(len(object_windows(source[i])) for i in indices)
    size = batch_size_for(plan.layout.spatial_shape, batch_size)
    steps = max(1, math.ceil(objects / size)) if len(indices) == 1 else 1
    if out is None:
        target = source.copy()
    else:
        if tuple(out.shape) != tuple(source.shape):
            raise InputError(f"out of shape {tuple(out.shape)} does not match the labels "
                             f"{tuple(source.shape)}.")
        target = out
        target[...] = source
    job = RefineJob(source, float(score_threshold), float(iou_threshold), bool(use_mask),
                    bool(use_point), bool(hq_token_only), int(batch_size), steps, tiling)
    return (SlicePlan(plan.layout, plan.contrast_limits, indices), job,
            RefineResult(target, objects=objects))


def refine_labels(image, labels, model=None, *, segmenter=None, cache=None, encode=None,
                  slices: Sequence[tuple[int, ...]] | None = None, out=None,
                  score_threshold: float = 0.5, iou_threshold: float = 0.5,
                  use_mask: bool = True, use_point: bool = False, hq_token_only: bool = True,
                  batch_size: int = 32, encoder_batch_size: int | None = None,
                  contrast_limits: tuple[float, float] | None = None,
                  tiling=DEFAULT_TILING, progress: Progress | None = None,
                  should_stop: ShouldStop | None = None, **layout_kwargs) -> RefineResult:
    """Refine every object of ``labels`` with HQ-SAM, each keeping its id.

    Parameters
    ----------
    image : array-like
        N-D image (numpy, dask, zarr): ``(..., H, W)``, optionally RGB or with a channel
        axis (``rgb``, ``channel_axis``, ``channel``, ``axes``, ``layout`` in
        ``layout_kwargs``).
    labels : array-like
        Source labels of the image's labels shape ``(..., H, W)``, 0 background; not
        modified.
    model : HQSam or SliceSegmenter, optional
        Needed unless ``segmenter`` is given; a segmenter here is used as ``segmenter``.
    segmenter : SliceSegmenter, optional
        Reuse one (and its embedding cache).
    cache, encode
        For the segmenter built from ``model`` (see :class:`~.segmenter.SliceSegmenter`).
    slices : sequence of tuple of int, optional
        Only these slices (default: every slice holding objects).
    out : array-like, optional
        Array of the labels' shape to write into (e.g. a zarr array); default a copy.
    score_threshold : float
        An object whose HQ mask has a predicted IoU below this keeps its source mask.
    iou_threshold : float
        An object whose HQ mask overlaps its source mask by an IoU below this keeps it.
    use_mask, use_point : bool
        Prompt with the source mask as mask logits (default) / with its most interior
        point, besides the box.
    hq_token_only : bool
        HQ logits alone (default) or SAM + HQ logits.
    batch_size : int
        Prompts per decoder call.
    encoder_batch_size : int, optional
        Slices embedded at once (see :func:`~.runner.run_slices`).
    contrast_limits : (lo, hi), optional
        Default: the whole image's (napari's default).
    tiling : Tiling or None
        Slices longer than ``tiling.tile`` on a side are refined tile by tile at native
        resolution (:func:`refine_slice_tiled`; default 1024 px tiles); None resizes
        each slice whole to the model input.
    progress, should_stop : callable, optional
        As in :mod:`.runner`: a step is a slice (a decoder call for a single slice).
        A cancelled run keeps the slices it finished; the others hold the source.

    Returns
    -------
    RefineResult
        Labels with the same ids per slice, ``refined``, ``kept`` (with reasons),
        ``scores`` ``(slice, id) -> predicted IoU``.
    """
    from .segmenter import SliceSegmenter

    start = time.perf_counter()
    plan, job, result = prepare_refine(
        image, labels, slices=slices, out=out, score_threshold=score_threshold,
        iou_threshold=iou_threshold, use_mask=use_mask, use_point=use_point,
        hq_token_only=hq_token_only, batch_size=batch_size, contrast_limits=contrast_limits,
        tiling=tiling, **layout_kwargs)
    if segmenter is None and isinstance(model, SliceSegmenter):
        segmenter = model
    if segmenter is None:
        if model is None:
            raise InputError("refine_labels needs a model or a segmenter.")
        segmenter = SliceSegmenter(model, cache=cache, encode=encode)
    run_slices(job, image, plan, segmenter, result, batch_size=encoder_batch_size,
               progress=progress, should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result


def refine_labels_distributed(image, labels, spec, *, client=None, scheduler: str | None = None,
                              n_workers: int | None = None, processes: bool = True,
                              slices=None, out=None, score_threshold: float = 0.5,
                              iou_threshold: float = 0.5, use_mask: bool = True,
                              use_point: bool = False, hq_token_only: bool = True,
                              batch_size: int = 32, contrast_limits=None,
                              tiling=DEFAULT_TILING, progress: Progress | None = None,
                              should_stop: ShouldStop | None = None,
                              **layout_kwargs) -> RefineResult:
    """:func:`refine_labels` with one Dask task per slice (identical labels).

    ``spec`` (a :class:`~.distributed.ModelSpec`), ``client``, ``scheduler``,
    ``n_workers``, ``processes``: as in :func:`~.distributed.run_slices_distributed`.
    """
    from .distributed import run_slices_distributed

    start = time.perf_counter()
    plan, job, result = prepare_refine(
        image, labels, slices=slices, out=out, score_threshold=score_threshold,
        iou_threshold=iou_threshold, use_mask=use_mask, use_point=use_point,
        hq_token_only=hq_token_only, batch_size=batch_size, contrast_limits=contrast_limits,
        tiling=tiling, **layout_kwargs)
    run_slices_distributed(job, image, plan, spec, result, client=client, scheduler=scheduler,
                           n_workers=n_workers, processes=processes, progress=progress,
                           should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result
