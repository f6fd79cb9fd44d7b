"""Labels arrays: pasting object masks (with undo records), masks to labels, stitching.

A *labels* array holds 0 for background and one positive id per object; it is any
array with numpy-style indexing and assignment (numpy, zarr, napari's
``Labels.data``). A slice index addresses one 2D slice (``()`` for 2D labels).
New objects never overwrite other objects unless asked.

One dtype policy (:func:`labels_dtype`): uint16 when every id is known up front and
fits, else uint32. Functions that number objects themselves (automatic masks,
stitching) return uint32, as their count is not known before they finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from ..errors import InputError

LABELS_DTYPE = np.uint32
# 8-connectivity, as OpenCV's connectedComponentsWithStats(mask, 8) in Meta's helper.
_EIGHT = np.ones((3, 3), dtype=bool)


def labels_dtype(max_id: int | None = None) -> np.dtype:
    """Dtype of a new labels array: uint16 when ``max_id`` is known and fits, else uint32."""
    if max_id is not None and max_id < 2**16:
        return np.dtype(np.uint16)
    return np.dtype(LABELS_DTYPE)


@dataclass(frozen=True, eq=False)
class LabelChange:
    """One edit of one 2D slice of a labels array.

    Attributes
    ----------
    slice_index : tuple of int
        Leading index of the edited slice.
    region : tuple of slice
        ``(rows, cols)`` bounding box of the edit within the slice.
    before, after : np.ndarray
        The region's values before and after the edit.
    """

    slice_index: tuple[int, ...]
    region: tuple[slice, slice]
    before: np.ndarray
    after: np.ndarray

    @property
    def key(self) -> tuple:
        """Index of the edited region in the whole labels array."""
        return (*self.slice_index, *self.region)

    @property
    def changed_pixels(self) -> int:
        """Number of pixels whose value changed."""
        return int(np.count_nonzero(self.before != self.after))


def next_label_id(labels) -> int:
    """Smallest id above every id in ``labels`` (1 for empty labels)."""
    return int(np.max(labels)) + 1 if np.size(labels) else 1


def paste_mask(labels, slice_index: tuple[int, ...], mask: np.ndarray, label_id: int, *,
               overwrite: bool = False, replace: bool = False,
               origin: tuple[int, int] | None = None) -> LabelChange | None:
    """Write one object's mask into one slice of ``labels``.

    Parameters
    ----------
    labels : array-like
        Labels array, modified in place.
    slice_index : tuple of int
        Leading index of the slice (``()`` for 2D labels).
    mask : np.ndarray
        ``(H, W)`` bool mask of the object, or a crop of it placed at ``origin``.
    label_id : int
        The object's id (> 0).
    overwrite : bool
        Also paint over other objects' pixels (default: only background and the
        object's own pixels are painted).
    replace : bool
        First erase this object's existing pixels on the slice (re-segmentation).
    origin : (int, int), optional
        ``(top, left)`` of a cropped ``mask`` in the slice. Without ``replace`` only
        that region of ``labels`` is read and written (what keeps huge slices cheap).

    Returns
    -------
    LabelChange or None
        What changed, or None when nothing did.
    """
    if label_id <= 0:
        raise InputError(f"label id must be positive, not {label_id}.")
    slice_index = tuple(int(i) for i in slice_index)
    mask = np.asarray(mask, dtype=bool)
    dtype = np.dtype(labels.dtype)
    if dtype.kind in "iu" and label_id > np.iinfo(dtype).max:
        raise InputError(f"label id {label_id} does not fit the labels' dtype {dtype}.")
    if origin is not None:
        mask, region = _placed_region(tuple(labels.shape[-2:]), mask, origin)
        if replace:  # the object's old pixels may lie anywhere on the slice
            full = np.zeros(tuple(labels.shape[-2:]), bool)
            full[region] = mask
            return paste_mask(labels, slice_index, full, label_id, overwrite=overwrite,
                              replace=True)
        rows, cols = np.nonzero(mask)
        if not len(rows):
            return None
        region = (slice(region[0].start + int(rows.min()), region[0].start + int(rows.max()) + 1),
                  slice(region[1].start + int(cols.min()), region[1].start + int(cols.max()) + 1))
        sub_mask = mask[int(rows.min()):int(rows.max()) + 1, int(cols.min()):int(cols.max()) + 1]
        before = np.asarray(labels[(*slice_index, *region)]).copy()
    else:
        current = np.asarray(labels[slice_index])
        if mask.shape != current.shape:
            raise InputError(f"mask shape {mask.shape} differs from the labels slice "
                             f"{current.shape}.")
        touched = mask | (current == label_id) if replace else mask
        if not touched.any():
            return None
        rows, cols = np.nonzero(touched)
        region = (slice(int(rows.min()), int(rows.max()) + 1),
                  slice(int(cols.min()), int(cols.max()) + 1))
        before = current[region].copy()
        sub_mask = mask[region]
    after = before.copy()
    if replace:
        after[after == label_id] = 0
    paintable = sub_mask if overwrite else sub_mask & ((after == 0) | (after == label_id))
    after[paintable] = label_id
    if np.array_equal(before, after):
        return None
    labels[(*slice_index, *region)] = after
    return LabelChange(slice_index, region, before, after)


def _placed_region(shape: tuple[int, int], mask: np.ndarray, origin: tuple[int, int]
                   ) -> tuple[np.ndarray, tuple[slice, slice]]:
    """A cropped mask and its region in a slice of ``shape``, clipped to the slice."""
    top, left = (int(v) for v in origin)
    bottom, right = top + mask.shape[0], left + mask.shape[1]
    if bottom <= 0 or right <= 0 or top >= shape[0] or left >= shape[1]:
        raise InputError(f"a mask of shape {mask.shape} at (top, left) {(top, left)} lies "
                         f"outside the labels slice {shape}.")
    t, l_ = max(top, 0), max(left, 0)
    b, r = min(bottom, shape[0]), min(right, shape[1])
    return mask[t - top:b - top, l_ - left:r - left], (slice(t, b), slice(l_, r))


def paste_masks(labels, slice_index: tuple[int, ...], masks: Sequence[np.ndarray],
                label_ids: Sequence[int], *, overwrite: bool = False,
                replace: bool = False, origins=None) -> list[LabelChange]:
    """:func:`paste_mask` for several objects on one slice, in the given order.

    Without ``overwrite`` an earlier object keeps pixels a later one also claims.
    ``origins`` (``(K, 2)`` top, left) places cropped masks (tiled results).
    """
    origins = [None] * len(label_ids) if origins is None else [tuple(o) for o in origins]
    changes = (paste_mask(labels, slice_index, m, i, overwrite=overwrite, replace=replace,
                          origin=o)
               for m, i, o in zip(masks, label_ids, origins))
    return [c for c in changes if c is not None]


def undo_changes(labels, changes: Sequence[LabelChange]) -> None:
    """Revert ``changes`` (as returned by the paste functions), latest first."""
    for change in reversed(list(changes)):
        labels[change.key] = change.before




def remove_small_regions(mask: np.ndarray, area_thresh: float,
                         mode: str) -> tuple[np.ndarray, bool]:
    """Fill small holes in, or drop small islands from, a binary mask.

    Same contract as ``segment_anything.utils.amg.remove_small_regions`` (which
    needs OpenCV, not a dependency here): 8-connected regions smaller than
    ``area_thresh`` pixels are removed; in ``"islands"`` mode the largest island
    is kept when every island is small.

    Parameters
    ----------
    mask : np.ndarray
        (H, W) bool mask.
    area_thresh : float
        Regions with fewer pixels than this are small.
    mode : str
        ``"holes"`` (fill small background regions) or ``"islands"`` (drop small
        foreground regions).

    Returns
    -------
    mask : np.ndarray
        (H, W) bool mask, the input itself when nothing changed.
    changed : bool
        Whether any region was filled or dropped.
    """
    if mode not in ("holes", "islands"):
        raise InputError(f"mode must be 'holes' or 'islands', not {mode!r}")
    holes = mode == "holes"
    working = np.logical_xor(mask, holes)
    regions, n_labels = ndimage.label(working, structure=_EIGHT)
    sizes = np.bincount(regions.ravel(), minlength=n_labels + 1)[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return np.isin(regions, np.concatenate([[0], small])), True
    keep = np.setdiff1d(np.arange(1, n_labels + 1), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, keep), True


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids of ``labels`` to ``1..n`` keeping their order; 0 stays 0.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels of any shape.

    Returns
    -------
    np.ndarray
        Same shape, dtype ``uint32``.
    """
    out, _, _ = relabel_sequential(np.asarray(labels))
    return out.astype(LABELS_DTYPE, copy=False)


def masks_to_labels(masks: Iterable[np.ndarray], scores: Sequence[float],
                    shape: tuple[int, int]) -> np.ndarray:
    """Paint instance masks into one labels array without overlaps.

    Where masks overlap the pixel goes to the mask with the higher score (ties:
    the earlier mask). Masks left without any pixel are dropped and the ids are
    renumbered to ``1..n`` in order of decreasing score.

    Parameters
    ----------
    masks : iterable of np.ndarray
        N (H, W) bool masks (an (N, H, W) array works too).
    scores : sequence of float
        (N,) score of each mask, e.g. the predicted IoU.
    shape : tuple of int
        (H, W) of the output.

    Returns
    -------
    np.ndarray
        (H, W) ``uint32`` labels, ids consecutive from 1.
    """
    masks = list(masks)
    scores = np.asarray(scores, dtype=float)
    if len(masks) != len(scores):
        raise InputError(f"{len(masks)} masks but {len(scores)} scores")
    labels = np.zeros(shape, dtype=LABELS_DTYPE)
    order = np.argsort(-scores, kind="stable")
    for new_id, index in enumerate(order, start=1):
        mask = np.asarray(masks[index], dtype=bool)
        if mask.shape != tuple(shape):
            raise InputError(f"mask of shape {mask.shape}, expected {tuple(shape)}")
        labels[mask & (labels == 0)] = new_id
    return relabel_consecutive(labels)


def offset_labels(labels: np.ndarray, offset: int) -> np.ndarray:
    """Add ``offset`` to every nonzero id (stack slices take ids after the previous ones)."""
    out = labels.astype(LABELS_DTYPE, copy=True)
    out[out > 0] += LABELS_DTYPE(offset)
    return out


def match_by_iou(previous: np.ndarray, current: np.ndarray,
                 iou_threshold: float) -> dict[int, int]:
    """Greedy one-to-one matching of the objects of two slices by mask IoU.

    Parameters
    ----------
    previous, current : np.ndarray
        (H, W) integer labels of two neighbouring slices.
    iou_threshold : float
        Pairs with a lower IoU are never matched.

    Returns
    -------
    dict
        ``{current id: previous id}`` for each matched object; pairs are taken
        in order of decreasing IoU, each id at most once.
    """
    both = (previous > 0) & (current > 0)
    if not both.any():
        return {}
    pairs, inter = np.unique(np.stack([previous[both], current[both]]), axis=1,
                             return_counts=True)
    prev_ids, prev_areas = np.unique(previous[previous > 0], return_counts=True)
    cur_ids, cur_areas = np.unique(current[current > 0], return_counts=True)
    area_p = prev_areas[np.searchsorted(prev_ids, pairs[0])]
    area_c = cur_areas[np.searchsorted(cur_ids, pairs[1])]
    iou = inter / (area_p + area_c - inter)
    matches: dict[int, int] = {}
    used_prev: set[int] = set()
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < iou_threshold:
            break
        p, c = int(pairs[0, k]), int(pairs[1, k])
        if p not in used_prev and c not in matches:
            matches[c] = p
            used_prev.add(p)
    return matches


def stitch_slices(labels: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Give an object the same id in neighbouring slices when their masks overlap.

    Slices are processed from first to last; each object of slice z takes the
    id of the object of slice z-1 it overlaps best (greedy, one-to-one, mask IoU
    at least ``iou_threshold``), otherwise a new id. Ids end up consecutive.

    Parameters
    ----------
    labels : np.ndarray
        (Z, H, W) labels; ids of different slices may coincide or not.
    iou_threshold : float
        Minimum IoU of two masks in neighbouring slices to be one object.

    Returns
    -------
    np.ndarray
        (Z, H, W) ``uint32`` labels with ids consecutive from 1.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"stitch_slices needs (Z, H, W) labels, got shape {labels.shape}")
    out = np.zeros(labels.shape, dtype=LABELS_DTYPE)
    next_id = 1
    for z in range(labels.shape[0]):
        current = labels[z]
        matches = match_by_iou(out[z - 1], current, iou_threshold) if z else {}
        ids = np.unique(current[current > 0])
        lookup = {}
        for old in ids:
            if int(old) in matches:
                lookup[int(old)] = matches[int(old)]
            else:
                lookup[int(old)] = next_id
                next_id += 1
        if ids.size:
            table = np.zeros(int(ids.max()) + 1, dtype=LABELS_DTYPE)
            for old, new in lookup.items():
                table[old] = new
            out[z] = table[current]
    return relabel_consecutive(out)
