"""Segment all prompted slices of an N-D image into a labels array, one id per object.

A :class:`PromptJob` run by :func:`~.runner.run_slices` (progress, cancel and the
result as described there); the Dask version is
:func:`~.distributed.segment_stack_distributed`, propagation through z is
:mod:`.propagate`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .labels import labels_dtype, paste_masks
from .prompts import ObjectPrompt, check_prompts, clip_prompts
from .propagate import propagate_objects
from .runner import (
    Progress,
    ShouldStop,
    SlicePlan,
    StackResult,
    check_labels,
    plan_slices,
    run_slices,
)
from .segmenter import EncodeFn, SliceResult, SliceSegmenter
from .tiles import DEFAULT_TILING, Tiling


def group_by_slice(prompts: Sequence[ObjectPrompt]) -> dict[tuple, list[ObjectPrompt]]:
    """Prompts per slice index, slices sorted, objects sorted by id within a slice."""
    groups: dict[tuple, list[ObjectPrompt]] = defaultdict(list)
    for p in sorted(prompts, key=lambda p: (p.slice_index, p.object_id)):
        groups[p.slice_index].append(p)
    return dict(groups)


def prompt_list(prompts) -> list[ObjectPrompt]:
    """``prompts`` as a list of :class:`~.prompts.ObjectPrompt` (one alone is wrapped).

    Raises
    ------
    InputError
        Anything else (dicts, arrays, strings), naming what was given.
    """
    if isinstance(prompts, ObjectPrompt):
        return [prompts]
    if isinstance(prompts, (str, bytes, dict)) or not isinstance(prompts, Sequence):
        raise InputError(f"prompts must be a list of ObjectPrompt, got {type(prompts).__name__}"
                         " (build them with napari_hq_sam.engine.prompts.ObjectPrompt, "
                         "read_prompt_files or prompts_from_layers).")
    wrong = [type(p).__name__ for p in prompts if not isinstance(p, ObjectPrompt)]
    if wrong:
        raise InputError(f"prompts must be ObjectPrompt objects; got {len(wrong)} of type "
                         f"{wrong[0]} (build them with napari_hq_sam.engine.prompts.ObjectPrompt).")
    return list(prompts)


def plan_stack(image, prompts: Sequence[ObjectPrompt], **plan_kwargs) -> SlicePlan:
    """Check ``prompts`` against the image; the plan visits the prompted slices in order.

    ``plan_kwargs`` go to :func:`~.runner.plan_slices` (``layout``,
    ``contrast_limits``, ``rgb``, ``channel_axis``, ``channel``, ``axes``).
    """
    plan = plan_slices(image, slices=[], **plan_kwargs)
    check_prompts(prompts, plan.layout)
    return SlicePlan(plan.layout, plan.contrast_limits, list(group_by_slice(prompts)))


def prepare_prompted(image, prompts, labels=None, **plan_kwargs
                     ) -> tuple[SlicePlan, dict, StackResult]:
    """Everything a prompted run needs, checked before any model work.

    Prompts are checked against the image (boxes past the edge clipped), the labels
    array made or checked. Returns the plan, the prompts per slice and the result the
    run fills.
    """
    prompts = prompt_list(prompts)
    plan = plan_stack(image, prompts, **plan_kwargs)
    prompts = clip_prompts(prompts, plan.layout)  # boxes past the image edge are clipped
    if labels is None:
        labels = new_labels(plan.layout.labels_shape, prompts)
    check_labels(labels, plan.layout)
    return (plan, group_by_slice(prompts),
            StackResult(labels, objects=len({p.object_id for p in prompts})))


def prompts_dtype(prompts: Sequence[ObjectPrompt]) -> np.dtype:
    """Labels dtype that holds every prompted id (:func:`~.labels.labels_dtype`)."""
    return labels_dtype(max((p.object_id for p in prompts), default=0))


def new_labels(shape: tuple[int, ...], prompts: Sequence[ObjectPrompt]) -> np.ndarray:
    """Zeroed labels of ``shape`` in the dtype that holds every prompted id."""
    return np.zeros(shape, prompts_dtype(prompts))


@dataclass(frozen=True)
class PromptJob:
    """Decode each slice's object prompts and paste the masks under their ids.

    Attributes
    ----------
    groups : dict
        ``slice index -> prompts`` (from :func:`group_by_slice`).
    overwrite : bool
        Let objects paint over other objects' pixels.
    tiling : Tiling or None
        How slices larger than the model input are tiled (:mod:`.tiles`); None
        resizes them whole to the model input.
    """

    groups: dict
    overwrite: bool = False
    tiling: Tiling | None = None
    steps: int = 1

    def segment(self, segmenter, index, image, embedding, step, should_stop) -> SliceResult:
        if embedding is None:  # a tiled slice: ``image`` reads windows
            return segmenter.segment(image, self.groups[index], tiling=self.tiling)
        return segmenter.segment(None, self.groups[index], embedding)

    def record(self, result: StackResult, index, output: SliceResult) -> None:
        paste_masks(result.labels, index, output.masks, output.object_ids.tolist(),
                    overwrite=self.overwrite, origins=output.origins)
        result.slices.append(index)
        for obj, score in zip(output.object_ids.tolist(), output.scores.tolist()):
            result.scores[(index, obj)] = score


def segment_stack(image, prompts: Sequence[ObjectPrompt], model=None, *,
                  segmenter: SliceSegmenter | None = None, cache=None,
                  encode: EncodeFn | None = None, batch_size: int | None = None,
                  contrast_limits: tuple[float, float] | None = None, labels=None,
                  overwrite: bool = False, propagate: bool = False,
                  score_threshold: float = 0.5, tiling: Tiling | None = DEFAULT_TILING,
                  progress: Progress | None = None,
                  should_stop: ShouldStop | None = None, **layout_kwargs) -> StackResult:
    """Segment every prompted slice of an N-D image (numpy, dask or zarr).

    Parameters
    ----------
    image : array-like
        ``(..., H, W)``, optionally with an RGB last axis or a channel axis
        (``rgb``, ``channel_axis``, ``channel``, ``axes`` in ``layout_kwargs``).
    prompts : list of ObjectPrompt
        Object prompts; ``object_id`` is the label value written.
    model : HQSam, optional
        Needed unless ``segmenter`` is given.
    segmenter : SliceSegmenter, optional
        Reuse one (and its cache, e.g. the widget's); else one is built from
        ``model``, ``cache`` and ``encode``.
    batch_size : int, optional
        Slices embedded at once; default from free GPU memory (1 on CPUs), see
        :func:`~.encoder.auto_batch_size`.
    contrast_limits : (lo, hi), optional
        Default: the whole image's minimum and maximum (uint8: 0, 255).
    labels : array-like, optional
        Array of the image's labels shape to paint into (numpy, zarr, a napari
        layer's data); default a new zeroed numpy array (:func:`new_labels`).
    overwrite : bool
        Let objects paint over other objects' pixels.
    propagate : bool
        Also propagate each object through the last leading axis
        (:func:`~.propagate.propagate_objects`).
    score_threshold : float
        Propagation stops where the predicted IoU falls below this.
    tiling : Tiling or None
        Slices longer than ``tiling.tile`` on a side are segmented tile by tile at
        native resolution, reading and embedding only the tiles prompts use
        (:mod:`.tiles`, :mod:`.tiled`); None resizes every slice to the model input.
    progress, should_stop : callable, optional
        ``progress(done, total)`` after each slice; ``should_stop() -> bool`` before
        each slice (see :mod:`.runner`).
    **layout_kwargs
        ``layout`` (an :class:`~.image.ImageLayout`), or ``rgb``, ``channel_axis``,
        ``channel``, ``axes`` for :func:`~.image.describe_layout`.

    Returns
    -------
    StackResult
    """
    start = time.perf_counter()
    plan, groups, result = prepare_prompted(image, prompts, labels,
                                            contrast_limits=contrast_limits, **layout_kwargs)
    if segmenter is None:
        if model is None:
            raise InputError("segment_stack needs a model or a segmenter.")
        segmenter = SliceSegmenter(model, cache=cache, encode=encode)
    run_slices(PromptJob(groups, overwrite, tiling), image, plan, segmenter, result,
               batch_size=batch_size, progress=progress, should_stop=should_stop)
    if propagate and not result.cancelled:
        propagate_objects(segmenter, image, plan, groups, result,
                          score_threshold=score_threshold, overwrite=overwrite, tiling=tiling,
                          progress=progress, should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result
