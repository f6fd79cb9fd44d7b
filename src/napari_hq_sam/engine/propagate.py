"""Through-z propagation: from an object's mask on one slice to its neighbours.

Each step prompts the next slice along the propagation axis (the last leading
axis, Z of ZYX or TZYX) with the previous slice's mask turned into a box around
it and a positive point at its most interior pixel. Propagation runs both ways
from every slice where the object was prompted and stops, per direction, at the
end of the axis, at a slice already holding this object's prompt, where the mask
vanishes (fewer than ``min_area`` pixels) or where the predicted IoU falls below
``score_threshold``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .labels import paste_mask
from .prompts import ObjectPrompt
from .runner import Progress, ShouldStop, SlicePlan, StackResult
from .tiles import Tiling


def prompt_from_mask(mask: np.ndarray, slice_index: tuple[int, ...],
                     object_id: int) -> ObjectPrompt | None:
    """Box around ``mask`` (``(H, W)`` bool) plus a positive point at its most interior pixel.

    Returns None for an empty mask.
    """
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    return ObjectPrompt(slice_index, points=[[c, r]], labels=[1],
                        box=[cols.min(), rows.min(), cols.max(), rows.max()],
                        object_id=object_id)


def propagate_object(segmenter, get_image: Callable[[tuple], np.ndarray], seed_index: tuple,
                     seed_mask: np.ndarray, object_id: int, n_slices: int, *,
                     direction: int, stop_at: set | None = None,
                     score_threshold: float = 0.5, min_area: int = 1,
                     should_stop: Callable[[], bool] | None = None,
                     tiling: Tiling | None = None):
    """Propagate one object from ``seed_index`` in one direction along the last leading axis.

    Parameters
    ----------
    segmenter : SliceSegmenter
    get_image : callable
        ``get_image(slice_index) -> uint8 (H, W, 3)`` model input of a slice, or a
        :class:`~.tiled.SliceSource` of it.
    seed_index : tuple of int
        Leading index of the seed slice.
    seed_mask : np.ndarray
        ``(H, W)`` bool mask of the object on the seed slice.
    object_id : int
    n_slices : int
        Length of the propagation axis.
    direction : int
        +1 or -1.
    stop_at : set of tuple, optional
        Slice indices not to enter (e.g. other prompted slices of the object); it is
        read at each step, so a caller may add the slices it has reached.
    tiling : Tiling, optional
        Slices longer than a tile are decoded tile by tile (:mod:`.tiled`).

    Yields
    ------
    (slice_index, mask (H, W) bool, score)
        One per slice reached, in order; stops silently at the stopping criteria.
    """
    mask, index = seed_mask, tuple(seed_index)
    while True:
        if should_stop is not None and should_stop():
            return
        z = index[-1] + direction
        index = (*index[:-1], z)
        if not 0 <= z < n_slices or (stop_at and index in stop_at):
            return
        prompt = prompt_from_mask(mask, index, object_id)
        if prompt is None:
            return
        image = get_image(index)
        if tiling is not None and tiling.applies(tuple(image.shape[:2])):
            step = segmenter.segment(image, [prompt], tiling=tiling)
            mask, score = step.full_mask(0), float(step.scores[0])
        else:
            segmenter.set_image(image)
            mask, score, _ = segmenter.decode(prompt)
        if score < score_threshold or mask.sum() < min_area:
            return
        yield index, mask, score


def propagate_objects(segmenter, image, plan: SlicePlan, groups: dict, result: StackResult,
                      *, score_threshold: float = 0.5, overwrite: bool = False,
                      tiling: Tiling | None = None, progress: Progress | None = None,
                      should_stop: ShouldStop | None = None) -> None:
    """Propagate every prompted object of a stack run through the last leading axis.

    Parameters
    ----------
    segmenter : SliceSegmenter
    image : array-like
        The N-D image.
    plan : SlicePlan
        Layout and contrast limits of the run (:mod:`.runner`).
    groups : dict
        ``slice index -> prompts``; each object's pixels in ``result.labels`` on its
        prompted slices are its seeds.
    result : StackResult
        New masks are pasted into ``result.labels`` without overwriting other objects
        (unless ``overwrite``) and recorded in ``result``; ``cancelled`` is set when
        ``should_stop()`` ends the run.
    tiling : Tiling, optional
        Slices longer than a tile are decoded tile by tile (:mod:`.tiled`).
    progress, should_stop : callable, optional
        The runner's conventions, one step per slice reached.
    """
    layout = plan.layout
    if not layout.leading_shape:
        raise InputError("propagation needs a stack: this image has a single 2D slice.")
    n_slices = layout.leading_shape[-1]
    seeds: dict[int, list[tuple]] = {}
    for index, prompts in groups.items():
        for p in prompts:
            seeds.setdefault(p.object_id, []).append(index)
    labels = result.labels
    computed, reused = segmenter.computed, segmenter.reused
    total = len(result.slices) + sum(n_slices - len(s) for s in seeds.values())
    tiled = tiling is not None and tiling.applies(layout.spatial_shape)
    read = plan.slice_source if tiled else plan.model_image
    for object_id, indices in sorted(seeds.items()):
        visited = set(indices)  # grows as the object reaches slices, so none is done twice
        for seed, direction in itertools.product(indices, (1, -1)):
            steps = propagate_object(
                segmenter, lambda i: read(image, i), seed,
                np.asarray(labels[seed]) == object_id, object_id, n_slices,
                direction=direction, stop_at=visited, score_threshold=score_threshold,
                should_stop=should_stop, tiling=tiling)
            for index, mask, score in steps:
                visited.add(index)
                paste_mask(labels, index, mask, object_id, overwrite=overwrite)
                result.slices.append(index)
                result.scores[(index, object_id)] = score
                if progress is not None:
                    progress(len(result.slices), total)
            if should_stop is not None and should_stop():
                result.cancelled = True
                break
        if result.cancelled:
            break
    result.computed += segmenter.computed - computed
    result.reused += segmenter.reused - reused
    if progress is not None and not result.cancelled:
        progress(len(result.slices), len(result.slices))
