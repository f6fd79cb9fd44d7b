"""Pasting object masks into a labels array, with records of what changed (for undo).

``labels`` is any array with numpy-style indexing and assignment: a numpy array,
a zarr array, or napari's ``Labels.data``. A slice index addresses one 2D slice
(``()`` for 2D labels). New objects never overwrite other objects unless asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
               overwrite: bool = False, replace: bool = False) -> LabelChange | None:
    """Write one object's mask into one slice of ``labels``.

    Parameters
    ----------
    labels : array-like
        Labels array, modified in place.
    slice_index : tuple of int
        Leading index of the slice (``()`` for 2D labels).
    mask : np.ndarray
        ``(H, W)`` bool mask of the object.
    label_id : int
        The object's id (> 0).
    overwrite : bool
        Also paint over other objects' pixels (default: only background and the
        object's own pixels are painted).
    replace : bool
        First erase this object's existing pixels on the slice (re-segmentation).

    Returns
    -------
    LabelChange or None
        What changed, or None when nothing did.
    """
    if label_id <= 0:
        raise ValueError(f"label id must be positive, not {label_id}.")
    slice_index = tuple(int(i) for i in slice_index)
    mask = np.asarray(mask, dtype=bool)
    current = np.asarray(labels[slice_index])
    if mask.shape != current.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the labels slice {current.shape}.")
    if current.dtype.kind in "iu" and label_id > np.iinfo(current.dtype).max:
        raise ValueError(f"label id {label_id} does not fit the labels' dtype {current.dtype}.")
    touched = mask | (current == label_id) if replace else mask
    if not touched.any():
        return None
    rows, cols = np.nonzero(touched)
    region = (slice(int(rows.min()), int(rows.max()) + 1),
              slice(int(cols.min()), int(cols.max()) + 1))
    before = current[region].copy()
    after = before.copy()
    sub_mask = mask[region]
    if replace:
        after[after == label_id] = 0
    paintable = sub_mask if overwrite else sub_mask & ((after == 0) | (after == label_id))
    after[paintable] = label_id
    if np.array_equal(before, after):
        return None
    labels[(*slice_index, *region)] = after
    return LabelChange(slice_index, region, before, after)


def paste_masks(labels, slice_index: tuple[int, ...], masks: Sequence[np.ndarray],
                label_ids: Sequence[int], *, overwrite: bool = False,
                replace: bool = False) -> list[LabelChange]:
    """:func:`paste_mask` for several objects on one slice, in the given order.

    Without ``overwrite`` an earlier object keeps pixels a later one also claims.
    """
    changes = (paste_mask(labels, slice_index, m, i, overwrite=overwrite, replace=replace)
               for m, i in zip(masks, label_ids))
    return [c for c in changes if c is not None]


def undo_changes(labels, changes: Sequence[LabelChange]) -> None:
    """Revert ``changes`` (as returned by the paste functions), latest first."""
    for change in reversed(list(changes)):
        labels[change.key] = change.before


def redo_changes(labels, changes: Sequence[LabelChange]) -> None:
    """Re-apply ``changes`` after :func:`undo_changes`, earliest first."""
    for change in changes:
        labels[change.key] = change.after
