"""Mask IoU and boundary IoU, as HQ-SAM reports them (mIoU, mBIoU).

Definitions (``HQSAM.md``, same as the official evaluation of HQ-SAM):

* mask IoU = |A ∩ B| / |A ∪ B|;
* boundary of a mask = the mask minus its erosion by a 3×3 square applied
  ``d`` times with zero padding, ``d = max(1, round(0.02 × image diagonal))``;
* boundary IoU = IoU of the two boundaries.

Both are 1.0 when the two masks (or boundaries) are empty.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

DILATION_RATIO = 0.02
_SQUARE = np.ones((3, 3), dtype=bool)


def boundary_width(shape: tuple[int, int], ratio: float = DILATION_RATIO) -> int:
    """Width ``d`` of the boundary band for an image of ``shape`` (H, W).

    ``d = max(1, round(ratio * sqrt(H**2 + W**2)))``; Python's ``round`` (half to even)
    is used, as in the official ``int(round(...))``.
    """
    return max(1, int(round(ratio * math.hypot(shape[0], shape[1]))))


def mask_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """Inner boundary band of a mask.

    Parameters
    ----------
    mask : np.ndarray
        (H, W) bool mask.
    d : int
        Number of 3×3 erosions (zero padding: the image border counts as background).

    Returns
    -------
    np.ndarray
        (H, W) bool: ``mask`` minus its ``d``-fold erosion.
    """
    mask = np.asarray(mask, dtype=bool)
    eroded = ndimage.binary_erosion(mask, structure=_SQUARE, iterations=d, border_value=0)
    return mask & ~eroded


def mask_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    union = np.count_nonzero(gt | pred)
    return 1.0 if union == 0 else np.count_nonzero(gt & pred) / union


def boundary_iou(gt: np.ndarray, pred: np.ndarray, d: int | None = None) -> float:
    """Boundary IoU of two (H, W) bool masks.

    Parameters
    ----------
    gt, pred : np.ndarray
        (H, W) masks of the same shape.
    d : int, optional
        Boundary width; by default :func:`boundary_width` of the mask shape (the image).

    Returns
    -------
    float
        IoU of the two boundary bands; 1.0 when both are empty.
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"Masks differ in shape: {gt.shape} vs {pred.shape}.")
    if d is None:
        d = boundary_width(gt.shape)
    window = _crop_window(gt | pred)
    if window is None:
        return 1.0
    return mask_iou(mask_boundary(gt[window], d), mask_boundary(pred[window], d))


def _crop_window(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of ``mask`` grown by one pixel and clipped to the image.

    Erosion with zero padding inside this window equals erosion of the whole
    image: outside the masks everything is background already.
    """
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    r0, r1 = np.flatnonzero(rows)[[0, -1]]
    c0, c1 = np.flatnonzero(cols)[[0, -1]]
    h, w = mask.shape
    return slice(max(r0 - 1, 0), min(r1 + 2, h)), slice(max(c0 - 1, 0), min(c1 + 2, w))


def object_scores(gt: np.ndarray, pred: np.ndarray, d: int | None = None) -> tuple[float, float]:
    """``(mask IoU, boundary IoU)`` of one object; see :func:`boundary_iou` for ``d``."""
    return mask_iou(gt, pred), boundary_iou(gt, pred, d)


def mean_scores(ious, bious) -> tuple[float, float]:
    """``(mIoU, mBIoU)``: plain means over objects; NaN when there are none."""
    ious, bious = np.asarray(ious, dtype=float), np.asarray(bious, dtype=float)
    if ious.size == 0:
        return math.nan, math.nan
    return float(ious.mean()), float(bious.mean())
