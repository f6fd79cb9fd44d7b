"""Judging refined masks: which objects keep their source mask, and no overlaps.

Part of :mod:`.refine` (see there for the rules).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

EMPTY, LOW_SCORE, MOVED, OVERLAPPED = "empty", "low score", "moved", "overlapped"
REASONS = {
    EMPTY: "HQ-SAM returned an empty mask",
    LOW_SCORE: "predicted IoU below the score threshold",
    MOVED: "IoU with the source mask below the IoU threshold (or no overlap)",
    OVERLAPPED: "every pixel of its new mask went to neighbours",
}
_EIGHT = np.ones((3, 3), dtype=bool)


def touching_source(mask: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The 8-connected parts of ``mask`` that overlap ``source`` (both bool, same shape)."""
    if not (mask & source).any():
        return np.zeros_like(mask)
    parts, _ = ndimage.label(mask, structure=_EIGHT)
    keep = np.unique(parts[mask & source])
    return np.isin(parts, keep[keep > 0])


def _bounds(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    return slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)


def _union(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice]:
    return (slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
            slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)))


@dataclass
class _Candidate:
    """A refined mask of one object, cropped to ``window``."""

    object_id: int
    window: tuple[slice, slice]
    mask: np.ndarray
    score: float
    iou: float


def judge(object_id: int, source_window, source: np.ndarray, mask: np.ndarray, score: float,
          *, score_threshold: float, iou_threshold: float) -> _Candidate | tuple[str, float]:
    """A refined mask, or ``(reason, iou)`` when the object keeps its source mask.

    Parameters
    ----------
    object_id : int
    source_window : (slice, slice)
        The object's bounding window in the slice.
    source : np.ndarray
        ``(H, W)`` integer source labels of the slice.
    mask : np.ndarray
        ``(H, W)`` bool predicted mask.
    score : float
        Its predicted IoU.
    """
    window = _bounds(mask)
    if window is None:
        return EMPTY, 0.0
    window = _union(window, source_window)
    src = source[window] == object_id
    crop = touching_source(mask[window], src)
    if not crop.any():  # a mask elsewhere: HQ-SAM found another object
        return MOVED, 0.0
    inter, union = np.count_nonzero(crop & src), np.count_nonzero(crop | src)
    iou = inter / union
    if not score >= score_threshold:
        return LOW_SCORE, iou
    if iou < iou_threshold:
        return MOVED, iou
    return _Candidate(object_id, window, crop, score, iou)


def resolve_overlaps(source: np.ndarray, windows: dict, candidates: list[_Candidate],
                     kept_ids: set[int]) -> tuple[np.ndarray, list[int]]:
    """Paint refined masks and kept source masks into one slice without overlaps.

    Priorities per pixel (module docstring): a kept object's source pixel (3), the
    claiming object's own source pixel (2 + score), any other claim (score, clipped to
    [0, 1]); strict ``>`` so the earlier (lower id) object wins ties.

    Returns
    -------
    labels : np.ndarray
        ``(H, W)`` of the source's dtype.
    lost : list of int
        Refined objects left without a pixel.
    """
    out = np.zeros_like(source)
    best = np.full(source.shape, -np.inf)
    for object_id in sorted(kept_ids):
        rows, cols = windows[object_id]
        own = source[rows, cols] == object_id
        out[rows, cols][own] = object_id
        best[rows, cols][own] = 3.0
    for cand in sorted(candidates, key=lambda c: c.object_id):
        rows, cols = cand.window
        priority = np.where(source[rows, cols] == cand.object_id, 2.0, 0.0) + \
            float(np.clip(cand.score, 0.0, 1.0))
        take = cand.mask & (priority > best[rows, cols])
        out[rows, cols][take] = cand.object_id
        best[rows, cols][take] = priority[take]
    present = set(np.unique(out).tolist())
    lost = [c.object_id for c in candidates if c.object_id not in present]
    return out, lost
