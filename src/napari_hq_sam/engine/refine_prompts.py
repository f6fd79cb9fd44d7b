"""Prompts for refining objects: windows, boxes, mask logits in SAM's 256² frame.

Part of :mod:`.refine` (see there for why each object is prompted as it is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LOGIT_EPS = 1e-3  # coverage clipped to [eps, 1 - eps]: logits within about ±6.9
# Bytes of decoder output one batch may take (upscaled float logits at 1024² and at
# the slice's size): bounds memory on large slices.
_BATCH_BYTES = 2**29



# -- prompts ---------------------------------------------------------------------------------

def object_windows(labels: np.ndarray) -> list[tuple[int, tuple[slice, slice]]]:
    """``(id, (rows, cols))`` bounding windows of every object of a 2D labels slice.

    Sorted by id; sparse huge ids (e.g. 3_000_000_000) cost no memory.
    """
    labels = np.asarray(labels)
    if not labels.any():
        return []
    ids = None
    if labels.max() > labels.size:  # find_objects allocates one entry per id up to the max
        ids, dense = np.unique(labels, return_inverse=True)
        labels = dense.reshape(labels.shape)
        if ids[0] != 0:
            ids, labels = np.concatenate([[0], ids]), labels + 1
    out = []
    for i, window in enumerate(ndimage.find_objects(labels)):
        if window is not None:
            out.append((i + 1 if ids is None else int(ids[i + 1]), window))
    return out


def _area_weights(n_pixels: int, scale: float, n_low: int = 256) -> np.ndarray:
    """``(n_low, n_pixels)``: share of each low-resolution cell covered by each pixel.

    Low-resolution cell ``i`` spans pixels ``[i * scale, (i + 1) * scale)``.
    """
    starts = np.arange(n_low, dtype=np.float64)[:, None] * scale
    pixel = np.arange(n_pixels, dtype=np.float64)[None, :]
    overlap = np.minimum(starts + scale, pixel + 1) - np.maximum(starts, pixel)
    return np.clip(overlap, 0.0, None) / scale


class LowResFrame:
    """The model's 256 x 256 low-resolution mask frame of a slice.

    The slice (``original_size`` H, W) is resized to ``input_size`` (its long side
    1024) and padded to 1024 x 1024; the low-resolution frame is that at 1/4.

    Parameters
    ----------
    original_size, input_size : (int, int)
        As on :class:`~napari_hq_sam.predictor.ImageEmbedding`.
    """

    def __init__(self, original_size: tuple[int, int], input_size: tuple[int, int]):
        (h, w), (nh, nw) = original_size, input_size
        self.rows = _area_weights(h, 4.0 * h / nh)
        self.cols = _area_weights(w, 4.0 * w / nw)
        # cells inside the resized image (the rest is padding)
        self.inside = (math.ceil(nh / 4), math.ceil(nw / 4))

    def coverage(self, mask: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
        """``(256, 256)`` share of each cell covered by ``mask`` (cropped to ``window``)."""
        rows, cols = window
        ry, rx = self.rows[:, rows], self.cols[:, cols]
        r_used = np.flatnonzero(ry.any(axis=1))
        c_used = np.flatnonzero(rx.any(axis=1))
        out = np.zeros((256, 256), dtype=np.float64)
        block = ry[r_used] @ mask.astype(np.float64) @ rx[c_used].T
        out[np.ix_(r_used, c_used)] = block
        return out

    def logits(self, mask: np.ndarray, window: tuple[slice, slice],
               eps: float = LOGIT_EPS) -> np.ndarray:
        """``(1, 256, 256)`` float32 mask logits of ``mask`` (see :func:`mask_logits`)."""
        cover = np.clip(self.coverage(mask, window), eps, 1.0 - eps)
        out = np.log(cover / (1.0 - cover))
        h, w = self.inside
        out[h:, :] = 0.0
        out[:, w:] = 0.0
        return out.astype(np.float32)[None]


def mask_logits(mask: np.ndarray, input_size: tuple[int, int] | None = None,
                eps: float = LOGIT_EPS) -> np.ndarray:
    """SAM's ``mask_input`` for a bool ``(H, W)`` mask: ``(1, 256, 256)`` float32 logits.

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` bool mask of one object on a slice.
    input_size : (int, int), optional
        The slice resized to the model's 1024 input (long side 1024); default computed
        as SAM's ``ResizeLongestSide`` does.
    eps : float
        Coverage is clipped to ``[eps, 1 - eps]`` before the logit.

    Returns
    -------
    np.ndarray
        Inside the resized image: ``log(c / (1 - c))`` of each cell's covered share
        ``c``; in the padding of a non-square frame: 0.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    if input_size is None:
        scale = 1024.0 / max(h, w)
        input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
    return LowResFrame((h, w), input_size).logits(mask, (slice(0, h), slice(0, w)), eps)


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` of the pixel of ``mask`` farthest from its edge (distance transform).

    The crop's border counts as outside, so the point is inside the object even when it
    touches the image edge. Ties: the first in row-major order.
    """
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    distance = ndimage.distance_transform_edt(padded)
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(x - 1), float(y - 1)


@dataclass
class ObjectPrompts:
    """The prompts of the objects of one slice, in id order.

    Attributes
    ----------
    ids : np.ndarray
        ``(K,)`` int64.
    windows : list of (slice, slice)
        Bounding windows in the slice.
    boxes : np.ndarray
        ``(K, 4)`` float XYXY, max inclusive.
    points : np.ndarray or None
        ``(K, 2)`` XY interior points.
    masks : np.ndarray or None
        ``(K, 1, 256, 256)`` mask logits.
    """

    ids: np.ndarray
    windows: list
    boxes: np.ndarray
    points: np.ndarray | None
    masks: np.ndarray | None


def object_prompts(labels: np.ndarray, input_size: tuple[int, int], *, use_mask: bool = True,
                   use_point: bool = False, ids=None) -> ObjectPrompts:
    """One prompt per object of a 2D labels slice (box, and mask logits / interior point).

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` integer labels, 0 background (a slice, or the window of one that the
        model sees).
    input_size : (int, int)
        Its size in the model's 1024 input (``ImageEmbedding.input_size``).
    use_mask, use_point : bool
        Add the mask logits / the interior point.
    ids : collection of int, optional
        Only these objects (default: every object).
    """
    windows = object_windows(labels)
    if ids is not None:
        wanted = set(int(i) for i in ids)
        windows = [(i, w) for i, w in windows if i in wanted]
    frame = LowResFrame(labels.shape, input_size) if use_mask else None
    boxes, points, masks = [], [], []
    for object_id, (rows, cols) in windows:
        boxes.append((cols.start, rows.start, cols.stop - 1, rows.stop - 1))
        if use_mask or use_point:
            mask = labels[rows, cols] == object_id
            if use_point:
                x, y = interior_point(mask)
                points.append((x + cols.start, y + rows.start))
            if use_mask:
                masks.append(frame.logits(mask, (rows, cols)))
    k = len(windows)
    return ObjectPrompts(
        np.array([i for i, _ in windows], dtype=np.int64), [w for _, w in windows],
        np.array(boxes, dtype=np.float32).reshape(k, 4),
        np.array(points, dtype=np.float32).reshape(k, 2) if use_point else None,
        np.array(masks, dtype=np.float32).reshape(k, 1, 256, 256) if use_mask else None)


# -- decoding ----------------------------------------------------------------------------------

def decode_batch(predictor, prompts: ObjectPrompts, chunk: slice,
                 hq_token_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(masks (B, H, W) bool, scores (B,))`` of the prompts in ``chunk``, one decoder call.

    ``predictor`` has the slice's embedding set.
    """
    import torch

    size = predictor.original_size
    boxes = predictor.transform.apply_boxes_torch(
        torch.as_tensor(prompts.boxes[chunk], dtype=torch.float32), size)
    coords = labels = masks_in = None
    if prompts.points is not None:
        coords = predictor.transform.apply_coords_torch(
            torch.as_tensor(prompts.points[chunk][:, None, :], dtype=torch.float32), size)
        labels = torch.ones(coords.shape[:2], dtype=torch.int)
    if prompts.masks is not None:
        masks_in = torch.as_tensor(prompts.masks[chunk])
    masks, scores, _ = predictor.predict_torch(coords, labels, boxes=boxes, mask_input=masks_in,
                                               multimask_output=False,
                                               hq_token_only=hq_token_only)
    return masks[:, 0].cpu().numpy(), scores[:, 0].float().cpu().numpy()


def batch_size_for(shape: tuple[int, int], wanted: int) -> int:
    """Prompts per decoder call for a slice of ``shape``: ``wanted``, fewer on large slices."""
    per_prompt = 4 * (1024 * 1024 + int(shape[0]) * int(shape[1]))
    return max(1, min(int(wanted), _BATCH_BYTES // per_prompt))
