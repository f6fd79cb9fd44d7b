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

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .image import ImageLayout
from .prompts import ObjectPrompt


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
                     should_stop: Callable[[], bool] | None = None):
    """Propagate one object from ``seed_index`` in one direction along the last leading axis.

    Parameters
    ----------
    segmenter : SliceSegmenter
    get_image : callable
        ``get_image(slice_index) -> uint8 (H, W, 3)`` model input of a slice.
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
        segmenter.set_image(get_image(index))
        mask, score, _ = segmenter.decode(prompt)
        if score < score_threshold or mask.sum() < min_area:
            return
        yield index, mask, score


def propagate_objects(segmenter, image, layout: ImageLayout, contrast_limits, groups: dict,
                      result, *, score_threshold: float = 0.5, overwrite: bool = False,
                      progress=None, should_stop=None) -> None:
    """Propagate every prompted object of a stack run through the last leading axis.

    Seeds are the object's pixels in ``result.labels`` on its prompted slices;
    new masks are pasted without overwriting other objects (unless ``overwrite``)
    and recorded in ``result`` (a :class:`~.stack.StackResult`).
    """
    from .labels import paste_mask
    from .stack import model_slice

    if not layout.leading_shape:
        raise ValueError("propagation needs a stack: this image has a single 2D slice.")
    n_slices = layout.leading_shape[-1]
    seeds: dict[int, list[tuple]] = {}
    for index, prompts in groups.items():
        for p in prompts:
            seeds.setdefault(p.object_id, []).append(index)
    labels = result.labels
    total = len(result.slices) + sum(n_slices - len(s) for s in seeds.values())
    for object_id, indices in sorted(seeds.items()):
        visited = set(indices)  # grows as the object reaches slices, so none is done twice
        for seed in indices:
            seed_mask = np.asarray(labels[seed]) == object_id
            for direction in (1, -1):
                steps = propagate_object(
                    segmenter, lambda i: model_slice(image, layout, i, contrast_limits), seed,
                    seed_mask, object_id, n_slices, direction=direction, stop_at=visited,
                    score_threshold=score_threshold, should_stop=should_stop)
                for index, mask, score in steps:
                    visited.add(index)
                    paste_mask(labels, index, mask, object_id, overwrite=overwrite)
                    result.slices.append(index)
                    result.scores[(index, object_id)] = score
                    if progress is not None:
                        progress(len(result.slices), total)
                if should_stop is not None and should_stop():
                    result.cancelled = True
                    return
    if progress is not None:
        progress(len(result.slices), len(result.slices))
