"""Segment all prompted slices of an N-D image into a labels array, one id per object.

Progress and cancellation are plain callables, so the napari widget, the CLI and
scripts share this one implementation:

- ``progress(done, total)`` is called after each slice;
- ``should_stop() -> bool`` is asked before each batch of slices; a cancelled run
  keeps the slices it finished (in ``labels`` and in the embedding cache), so a
  rerun with a disk cache resumes where it stopped.

Embeddings are computed by ``encode(model, images) -> list[ImageEmbedding]``
(default :func:`~.segmenter.encode_slices`), called with up to ``batch_size``
slices at a time; a batched GPU encoder can be swapped in.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .image import ImageLayout, default_contrast_limits, describe_layout, to_model_image
from .labels import paste_masks
from .prompts import ObjectPrompt, check_prompts
from .segmenter import EncodeFn, SliceResult, SliceSegmenter

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


@dataclass
class StackResult:
    """What a stack run produced.

    Attributes
    ----------
    labels : array-like
        Labels of the image's ``labels_shape`` (the array passed in, or a new numpy one).
    slices : list of tuple
        Leading indices of the slices segmented (prompted, then propagated).
    objects : int
        Number of distinct objects prompted.
    computed, reused : int
        Embeddings computed by the encoder / taken from the cache.
    seconds : float
        Wall time of the run.
    cancelled : bool
        The run stopped early because ``should_stop()`` returned True.
    scores : dict
        ``(slice index, object id) -> predicted IoU``.
    """

    labels: object
    slices: list = field(default_factory=list)
    objects: int = 0
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    scores: dict = field(default_factory=dict)


def labels_dtype(prompts: Sequence[ObjectPrompt]) -> np.dtype:
    """uint16 when every object id fits, else uint32."""
    top = max((p.object_id for p in prompts), default=0)
    return np.dtype(np.uint16 if top < 2**16 else np.uint32)


def group_by_slice(prompts: Sequence[ObjectPrompt]) -> dict[tuple, list[ObjectPrompt]]:
    """Prompts per slice index, slices sorted, objects sorted by id within a slice."""
    groups: dict[tuple, list[ObjectPrompt]] = defaultdict(list)
    for p in sorted(prompts, key=lambda p: (p.slice_index, p.object_id)):
        groups[p.slice_index].append(p)
    return dict(groups)


def prepare_run(image, prompts: Sequence[ObjectPrompt], *, layout: ImageLayout | None = None,
                contrast_limits: tuple[float, float] | None = None, labels=None,
                **layout_kwargs) -> tuple[ImageLayout, tuple[float, float], object]:
    """Check the inputs of a stack run; return its layout, contrast limits and labels array.

    ``layout_kwargs`` go to :func:`~.image.describe_layout` (``rgb``,
    ``channel_axis``, ``channel``, ``axes``). Contrast limits default to the whole
    image's (napari's default, see :func:`~.image.default_contrast_limits`).
    """
    layout = layout or describe_layout(image.shape, **layout_kwargs)
    check_prompts(prompts, layout)
    if contrast_limits is None:
        contrast_limits = default_contrast_limits(selected_channel(image, layout))
    if labels is None:
        labels = np.zeros(layout.labels_shape, labels_dtype(prompts))
    elif tuple(labels.shape) != layout.labels_shape:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the image's "
                         f"labels shape {layout.labels_shape}.")
    return layout, contrast_limits, labels


def selected_channel(image, layout: ImageLayout):
    """``image`` restricted to the chosen channel (lazily for dask), for contrast limits."""
    if layout.channel_axis is None:
        return image
    key = [slice(None)] * len(layout.shape)
    key[layout.channel_axis] = layout.channel
    return image[tuple(key)]


def model_slice(image, layout: ImageLayout, index: tuple[int, ...],
                contrast_limits: tuple[float, float]) -> np.ndarray:
    """Slice ``index`` of ``image`` as the model's uint8 ``(H, W, 3)`` input."""
    return to_model_image(layout.take(image, index), contrast_limits, rgb=layout.rgb)


def segment_stack(image, prompts: Sequence[ObjectPrompt], model=None, *,
                  segmenter: SliceSegmenter | None = None, cache=None,
                  encode: EncodeFn | None = None, batch_size: int = 1,
                  contrast_limits: tuple[float, float] | None = None, labels=None,
                  overwrite: bool = False, propagate: bool = False,
                  score_threshold: float = 0.5, progress: Progress | None = None,
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
    batch_size : int
        Slices handed to ``encode`` at once.
    contrast_limits : (lo, hi), optional
        Default: the whole image's minimum and maximum (uint8: 0, 255).
    labels : array-like, optional
        Array of the image's labels shape to paint into (numpy, zarr, a napari
        layer's data); default a new zeroed numpy array.
    overwrite : bool
        Let objects paint over other objects' pixels.
    propagate : bool
        Also propagate each object through the last leading axis
        (:func:`~.propagate.propagate_objects`).
    score_threshold : float
        Propagation stops where the predicted IoU falls below this.
    progress : callable, optional
        ``progress(done, total)`` after each slice.
    should_stop : callable, optional
        ``should_stop() -> bool``, asked before each batch; True cancels the run.
    **layout_kwargs
        ``layout`` (an :class:`~.image.ImageLayout`), or ``rgb``, ``channel_axis``,
        ``channel``, ``axes`` for :func:`~.image.describe_layout`.

    Returns
    -------
    StackResult
    """
    start = time.perf_counter()
    layout, limits, labels = prepare_run(image, prompts, contrast_limits=contrast_limits,
                                         labels=labels, **layout_kwargs)
    if segmenter is None:
        if model is None:
            raise ValueError("segment_stack needs a model or a segmenter.")
        segmenter = SliceSegmenter(model, cache=cache, encode=encode)
    computed0, reused0 = segmenter.computed, segmenter.reused
    groups = group_by_slice(prompts)
    result = StackResult(labels, objects=len({p.object_id for p in prompts}))
    order = list(groups)
    for first in range(0, len(order), max(1, batch_size)):
        if should_stop is not None and should_stop():
            result.cancelled = True
            break
        batch = order[first:first + max(1, batch_size)]
        images = [model_slice(image, layout, idx, limits) for idx in batch]
        for idx, emb in zip(batch, segmenter.embeddings(images)):
            paste_result(labels, segmenter.segment(None, groups[idx], emb), result, overwrite)
            if progress is not None:
                progress(len(result.slices), len(order))
    if propagate and not result.cancelled:
        from .propagate import propagate_objects

        propagate_objects(segmenter, image, layout, limits, groups, result,
                          score_threshold=score_threshold, overwrite=overwrite,
                          progress=progress, should_stop=should_stop)
    result.computed = segmenter.computed - computed0
    result.reused = segmenter.reused - reused0
    result.seconds = time.perf_counter() - start
    return result


def paste_result(labels, sliced: SliceResult, result: StackResult, overwrite: bool) -> None:
    """Paste one slice's masks into ``labels`` and record it in ``result``."""
    paste_masks(labels, sliced.slice_index, sliced.masks, sliced.object_ids.tolist(),
                overwrite=overwrite)
    result.slices.append(sliced.slice_index)
    for obj, score in zip(sliced.object_ids.tolist(), sliced.scores.tolist()):
        result.scores[(sliced.slice_index, obj)] = score
