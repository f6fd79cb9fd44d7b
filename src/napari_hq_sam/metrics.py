"""Mask IoU and boundary IoU, as HQ-SAM reports them (mIoU, mBIoU), and instance metrics.

Definitions (``HQSAM.md``, same as the official evaluation of HQ-SAM):

* mask IoU = |A ∩ B| / |A ∪ B|;
* boundary of a mask = the mask minus its erosion by a 3×3 square applied
  ``d`` times with zero padding, ``d = max(1, round(0.02 × image diagonal))``;
* boundary IoU = IoU of the two boundaries.

Both are 1.0 when the two masks (or boundaries) are empty.

Instance metrics of a labels image against ground-truth labels, as StarDist's
``matching`` and elf's ``mean_segmentation_accuracy`` (which micro-sam reports) compute
them:

* at an IoU threshold t, ground-truth and predicted objects are matched one to one,
  a pair only when its IoU >= t; the matching is the largest such (Hungarian,
  ``scipy.optimize.linear_sum_assignment``; for t > 0.5 each object has at most one
  candidate, so it is also the greedy one). TP = matched pairs, FP = unmatched
  predictions, FN = unmatched ground truth;
* segmentation accuracy SA(t) = TP / (TP + FP + FN); F1(t) = 2 TP / (2 TP + FP + FN);
  both 0 when TP = 0 (also for two empty images, as StarDist and elf);
* mSA = mean of SA over t = 0.50, 0.55, …, 0.95 (the decimals, so an IoU of exactly
  0.6 matches at 0.6).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

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


# -- instance metrics ------------------------------------------------------------------------

IOU_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(50, 100, 5) / 100, 2))


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every ground-truth object with every predicted object.

    Parameters
    ----------
    gt, pred : np.ndarray
        Integer labels of the same shape (any dimension), 0 = background.

    Returns
    -------
    gt_ids, pred_ids : np.ndarray
        ``(n_gt,)`` and ``(n_pred,)`` sorted object ids.
    iou : np.ndarray
        ``(n_gt, n_pred)`` float64 mask IoU (0 for pairs that do not touch).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"Labels differ in shape: {gt.shape} vs {pred.shape}.")
    gt_ids, gt_area = np.unique(gt[gt > 0], return_counts=True)
    pred_ids, pred_area = np.unique(pred[pred > 0], return_counts=True)
    iou = np.zeros((gt_ids.size, pred_ids.size))
    both = (gt > 0) & (pred > 0)
    if both.any():
        pairs, inter = np.unique(np.stack([gt[both], pred[both]]), axis=1, return_counts=True)
        rows = np.searchsorted(gt_ids, pairs[0])
        cols = np.searchsorted(pred_ids, pairs[1])
        iou[rows, cols] = inter / (gt_area[rows] + pred_area[cols] - inter)
    return gt_ids, pred_ids, iou


def true_positives(iou: np.ndarray, threshold: float) -> int:
    """Largest number of one-to-one pairs with IoU >= ``threshold`` (Hungarian).

    Only rows and columns with a candidate pair enter the assignment, so large
    label images with few touching objects stay cheap.
    """
    ok = iou >= threshold
    rows, cols = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
    if rows.size == 0:
        return 0
    sub = ok[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(sub, maximize=True)
    return int(np.count_nonzero(sub[r, c]))


def segmentation_accuracy(tp: int, fp: int, fn: int) -> float:
    """TP / (TP + FP + FN), 0 when TP = 0."""
    return tp / (tp + fp + fn) if tp > 0 else 0.0


def f1_score(tp: int, fp: int, fn: int) -> float:
    """2 TP / (2 TP + FP + FN), 0 when TP = 0."""
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


def instance_counts(gt: np.ndarray, pred: np.ndarray,
                    thresholds=IOU_THRESHOLDS) -> list[tuple[int, int, int]]:
    """``[(TP, FP, FN)]`` of ``pred`` against ``gt`` at each IoU threshold."""
    gt_ids, pred_ids, iou = iou_matrix(gt, pred)
    out = []
    for t in thresholds:
        tp = true_positives(iou, t)
        out.append((tp, pred_ids.size - tp, gt_ids.size - tp))
    return out


def mean_segmentation_accuracy(gt: np.ndarray, pred: np.ndarray,
                               thresholds=IOU_THRESHOLDS) -> float:
    """mSA: SA averaged over the IoU ``thresholds`` (default 0.50, 0.55, …, 0.95)."""
    return float(np.mean([segmentation_accuracy(*c)
                          for c in instance_counts(gt, pred, thresholds)]))


def f1_at(gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of ``pred`` against ``gt`` at one IoU threshold (default 0.5)."""
    return f1_score(*instance_counts(gt, pred, (threshold,))[0])
