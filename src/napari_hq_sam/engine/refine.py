"""Refine every object of an existing labels image with HQ-SAM, keeping each object's id.

Each object of each 2D slice becomes one prompt, and all prompts of a slice are decoded
in batches on the slice's embedding:

- its tight **box** (XYXY, max inclusive);
- its **mask** as SAM's ``mask_input``: low-resolution *logits* in the model's 256 x 256
  frame (:func:`mask_logits`). SAM was trained to take its own previous logits there, so
  the mask is made to look like them: the object's area coverage of each low-resolution
  pixel, as a logit clipped at ``±log((1 - eps) / eps)`` (about ±6.9), so the zero level
  runs along the object's boundary with sub-pixel accuracy instead of the staircase of a
  thresholded mask (the mask encoder's first layers are a strided convolution and a
  LayerNorm over 4 channels, so past a few units the magnitude hardly matters: the sign
  pattern and where it changes do); the padding of a non-square frame is 0 (micro-sam
  reports that SAM reads a padding of confident background badly on the released
  weights). The box leads
  and the mask disambiguates which object in the box is meant, as in micro-sam's
  ``segment_from_mask`` (box and mask, no points, by default);
- optionally its most **interior point** (maximum of the distance transform), a positive
  click that helps objects whose box holds more of a neighbour than of themselves.

Single-mask output is used (SAM's advice for box and mask prompts) and, by default, the
HQ mask alone (``hq_token_only``, the authors' advice for single objects and how HQ-SAM
is evaluated from boxes).

**What counts as refined.** A predicted mask keeps only its 8-connected parts that touch
the object's source mask (a fragment elsewhere in the box is another object). The object
keeps its source mask, and is listed in :attr:`RefineResult.kept` with its reason, when
the mask is empty (``"empty"``), its IoU with the source mask is below ``iou_threshold``
or it does not touch the source at all (``"moved"``: HQ-SAM segmented something else),
or SAM's predicted IoU is below ``score_threshold`` (``"low score"``; checked after the
no-overlap case and before the IoU threshold).

**No overlaps.** Per slice, each pixel goes to one object: an object that kept its
source mask keeps all of it; otherwise the object whose source mask held the pixel keeps
it if its refined mask claims it; otherwise the claiming object with the higher predicted
IoU (ties: the lower id). A pixel no object claims is background (a refined object
releases pixels of its source mask that its new mask leaves out). An object left without
any pixel by these rules keeps its source mask (``"overlapped"``). So every slice keeps
exactly its set of ids.

Slices larger than the model input are refined tile by tile at native resolution
(:func:`refine_slice_tiled`): each object in the tile that holds it, so a nucleus of a
20000-pixel slice is seen at the resolution it was drawn at.

A :class:`RefineJob` runs through :func:`~.runner.run_slices` (progress, cancel, caching
as every run over slices) or :func:`~.distributed.run_slices_distributed`
(:func:`refine_labels_distributed`); :func:`refine_labels` is the entry point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import Cancelled, InputError
from .labels import labels_dtype
from .runner import Progress, ShouldStop, SlicePlan, StackResult, plan_slices, run_slices
from .tiles import DEFAULT_TILING

EMPTY, LOW_SCORE, MOVED, OVERLAPPED = "empty", "low score", "moved", "overlapped"
REASONS = {
    EMPTY: "HQ-SAM returned an empty mask",
    LOW_SCORE: "predicted IoU below the score threshold",
    MOVED: "IoU with the source mask below the IoU threshold (or no overlap)",
    OVERLAPPED: "every pixel of its new mask went to neighbours",
}
LOGIT_EPS = 1e-3  # coverage clipped to [eps, 1 - eps]: logits within about ±6.9
_EIGHT = np.ones((3, 3), dtype=bool)
# Pixels an object's box is grown by before it is routed to a tile, so that its refined
# mask has room to move its boundary inside the window the model sees.
TILE_MARGIN = 16
# Bytes of decoder output one batch may take (upscaled float logits at 1024² and at
# the slice's size): bounds memory on large slices.
_BATCH_BYTES = 2**29


@dataclass(frozen=True)
class KeptObject:
    """An object that kept its source mask on one slice.

    Attributes
    ----------
    slice_index : tuple of int
        ``()`` for a 2D image, ``(z,)`` for ZYX.
    object_id : int
    reason : str
        ``"empty"``, ``"low score"``, ``"moved"`` or ``"overlapped"`` (see :data:`REASONS`).
    score : float
        SAM's predicted IoU of the refined mask.
    iou : float
        IoU of the refined mask with the source mask (0 for an empty mask).
    """

    slice_index: tuple
    object_id: int
    reason: str
    score: float
    iou: float

    def describe(self) -> str:
        """``"object 7 on slice 3: low score (predicted IoU 0.31, IoU with source 0.82)"``."""
        where = f" on slice {', '.join(map(str, self.slice_index))}" if self.slice_index else ""
        return (f"object {self.object_id}{where}: {self.reason} (predicted IoU "
                f"{self.score:.2f}, IoU with source {self.iou:.2f})")


@dataclass
class RefineResult(StackResult):
    """A :class:`~.runner.StackResult` with what refinement did.

    Attributes
    ----------
    labels : array-like
        The refined labels: same shape and dtype as the source; slices not reached
        (cancelled, not asked for) hold the source labels.
    objects : int
        Objects to refine, counted per slice (an id on 3 slices counts 3).
    refined : int
        Objects (per slice) that took their HQ mask.
    kept : list of KeptObject
        Objects (per slice) that kept their source mask, with the reason.
    """

    refined: int = 0
    kept: list = field(default_factory=list)

    def kept_reasons(self) -> dict[str, int]:
        """``{reason: count}`` of :attr:`kept`, in the order of :data:`REASONS`."""
        counts = {r: 0 for r in REASONS}
        for k in self.kept:
            counts[k.reason] += 1
        return {r: n for r, n in counts.items() if n}


@dataclass
class SliceRefinement:
    """What :meth:`RefineJob.segment` returns for one slice.

    Attributes
    ----------
    labels : np.ndarray
        ``(H, W)`` refined labels of the slice, the source's dtype.
    refined : list of int
        Ids that took their HQ mask.
    kept : list of KeptObject
    scores : dict
        ``id -> predicted IoU``.
    """

    labels: np.ndarray
    refined: list
    kept: list
    scores: dict


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


def _shifted(window: tuple[slice, slice], top: int, left: int) -> tuple[slice, slice]:
    rows, cols = window
    return (slice(rows.start + top, rows.stop + top), slice(cols.start + left, cols.stop + left))


@dataclass
class _Settings:
    """What :func:`refine_slice` was asked, handed to each frame it decodes."""

    score_threshold: float
    iou_threshold: float
    use_mask: bool
    use_point: bool
    hq_token_only: bool
    batch_size: int
    index: tuple


def _decode_frame(predictor, frame: np.ndarray, ids, offset: tuple[int, int],
                  settings: _Settings, should_stop, done) -> tuple[list, list, dict]:
    """Decode the objects ``ids`` of ``frame`` (the labels the model sees) and judge them.

    ``offset`` is the frame's ``(top, left)`` in the slice: candidates come back in slice
    coordinates. ``done(k)`` is called with the number of objects decoded so far.
    """
    prompts = object_prompts(frame, predictor.input_size, use_mask=settings.use_mask,
                             use_point=settings.use_point, ids=ids)
    n = len(prompts.ids)
    size = batch_size_for(frame.shape, settings.batch_size)
    windows = dict(zip(prompts.ids.tolist(), prompts.windows))
    candidates, kept, scores = [], [], {}
    for first in range(0, n, size):
        if should_stop is not None and should_stop():
            raise Cancelled
        chunk = slice(first, min(first + size, n))
        masks, batch_scores = decode_batch(predictor, prompts, chunk, settings.hq_token_only)
        for k, (mask, score) in enumerate(zip(masks, batch_scores.tolist())):
            object_id = int(prompts.ids[first + k])
            scores[object_id] = score
            outcome = judge(object_id, windows[object_id], frame, mask, score,
                            score_threshold=settings.score_threshold,
                            iou_threshold=settings.iou_threshold)
            if isinstance(outcome, _Candidate):
                outcome.window = _shifted(outcome.window, *offset)
                candidates.append(outcome)
            else:
                kept.append(KeptObject(tuple(settings.index), object_id, outcome[0], score,
                                       outcome[1]))
        done(chunk.stop)
    return candidates, kept, scores


def _paint(source: np.ndarray, candidates: list, kept: list, scores: dict,
           index: tuple) -> SliceRefinement:
    """Resolve overlaps (:func:`resolve_overlaps`); objects left without pixels are kept."""
    windows = dict(object_windows(source))
    kept_ids = {k.object_id for k in kept}
    while True:  # an object that lost every pixel keeps its source mask instead
        labels, lost = resolve_overlaps(source, windows, candidates, kept_ids)
        if not lost:
            break
        for cand in [c for c in candidates if c.object_id in lost]:
            kept.append(KeptObject(tuple(index), cand.object_id, OVERLAPPED, cand.score,
                                   cand.iou))
            kept_ids.add(cand.object_id)
        candidates = [c for c in candidates if c.object_id not in kept_ids]
    kept.sort(key=lambda k: k.object_id)
    return SliceRefinement(labels, [c.object_id for c in candidates], kept, scores)


def _progress(step, steps: int, total: int):
    """``done(k)``: ``k`` of ``total`` objects decoded, reported as ``step(k * steps // total)``."""
    def done(k: int) -> None:
        if step is not None and total:
            step(min(steps, steps * k // total))
    return done


def refine_slice(predictor, source: np.ndarray, *, score_threshold: float = 0.5,
                 iou_threshold: float = 0.5, use_mask: bool = True, use_point: bool = False,
                 hq_token_only: bool = True, batch_size: int = 32, index: tuple = (),
                 step=None, steps: int = 1, should_stop: ShouldStop | None = None
                 ) -> SliceRefinement:
    """Refine every object of one labels slice on the predictor's current embedding.

    Parameters
    ----------
    predictor : HQSamPredictor
        With the slice's embedding set.
    source : np.ndarray
        ``(H, W)`` integer labels of the slice.
    score_threshold, iou_threshold : float
        Below these an object keeps its source mask (module docstring).
    use_mask, use_point : bool
        Prompt with the mask logits / the interior point besides the box.
    hq_token_only : bool
        HQ logits alone (default) or SAM + HQ logits.
    batch_size : int
        Prompts per decoder call (fewer on large slices, :func:`batch_size_for`).
    index : tuple of int
        The slice's index, recorded in :class:`KeptObject`.
    step : callable, optional
        ``step(k)``: ``k`` of ``steps`` progress steps done within the slice.
    should_stop : callable, optional
        Asked between decoder calls; True raises :class:`~napari_hq_sam.errors.Cancelled`.
    """
    source = np.asarray(source)
    settings = _Settings(score_threshold, iou_threshold, use_mask, use_point, hq_token_only,
                         batch_size, tuple(index))
    total = len(object_windows(source))
    candidates, kept, scores = _decode_frame(predictor, source, None, (0, 0), settings,
                                             should_stop, _progress(step, steps, total))
    return _paint(source, candidates, kept, scores, index)


def refine_slice_tiled(segmenter, image, source: np.ndarray, tiling, *,
                       score_threshold: float = 0.5, iou_threshold: float = 0.5,
                       use_mask: bool = True, use_point: bool = False,
                       hq_token_only: bool = True, batch_size: int = 32, index: tuple = (),
                       step=None, steps: int = 1, should_stop: ShouldStop | None = None
                       ) -> SliceRefinement:
    """:func:`refine_slice` on a slice larger than the model input, window by window.

    Each object is decoded in the tile that holds its bounding box grown by
    :data:`TILE_MARGIN` (:meth:`~.tiles.Tiling.route`; an object larger than a tile gets
    a wider window, seen downscaled), at native resolution, with its mask logits made
    in that window's frame. Its refined mask cannot reach past that window.

    Parameters
    ----------
    segmenter : SliceSegmenter
        Embeds the windows (through its cache).
    image : SliceSource or array-like
        The slice, read window by window (:func:`~.tiled.as_source`).
    source : np.ndarray
        ``(H, W)`` integer labels of the slice.
    tiling : Tiling
    Others
        As in :func:`refine_slice`.
    """
    from .tiled import WINDOWS_PER_CALL, as_source
    from .tiles import Extent

    image = as_source(image)
    source = np.asarray(source)
    settings = _Settings(score_threshold, iou_threshold, use_mask, use_point, hq_token_only,
                         batch_size, tuple(index))
    groups: dict = {}
    objects = object_windows(source)
    for object_id, (rows, cols) in objects:
        extent = Extent(rows.start, cols.start, rows.stop - 1, cols.stop - 1)
        window = tiling.route(source.shape, extent.grown(TILE_MARGIN))
        groups.setdefault(window, []).append(object_id)
    windows = sorted(groups, key=lambda w: (w.top, w.left))
    candidates, kept, scores, decoded = [], [], {}, [0]
    report = _progress(step, steps, len(objects))
    for start in range(0, len(windows), WINDOWS_PER_CALL):
        if should_stop is not None and should_stop():
            raise Cancelled
        chunk = windows[start:start + WINDOWS_PER_CALL]
        for window, embedding in zip(chunk, segmenter.embeddings([image.read(w)
                                                                  for w in chunk])):
            segmenter.set_embedding(embedding)
            before = decoded[0]
            found = _decode_frame(segmenter.predictor, source[window.slices], groups[window],
                                  (window.top, window.left), settings, should_stop,
                                  lambda k, base=before: report(base + k))
            decoded[0] += len(groups[window])
            candidates += found[0]
            kept += found[1]
            scores.update(found[2])
    return _paint(source, candidates, kept, scores, index)


# -- runs over slices ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RefineJob:
    """Refine the objects of each slice of ``source`` (a :class:`~.runner.SliceJob`).

    Attributes
    ----------
    source : array-like
        The source labels (the image's labels shape); read one slice at a time.
    score_threshold, iou_threshold, use_mask, use_point, hq_token_only, batch_size
        As in :func:`refine_slice`.
    steps : int
        Progress steps per slice (decoder calls of a single slice, else 1).
    tiling : Tiling or None
        Slices larger than a tile are refined window by window at native resolution
        (:func:`refine_slice_tiled`); None resizes every slice whole to the model input.
    """

    source: object
    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    use_mask: bool = True
    use_point: bool = False
    hq_token_only: bool = True
    batch_size: int = 32
    steps: int = 1
    tiling: object = None

    def segment(self, segmenter, index, image, embedding, step, should_stop) -> SliceRefinement:
        options = dict(score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                       use_mask=self.use_mask, use_point=self.use_point,
                       hq_token_only=self.hq_token_only, batch_size=self.batch_size,
                       index=index, step=step, steps=self.steps, should_stop=should_stop)
        source = np.asarray(self.source[index])
        if embedding is None:  # a tiled slice (see SliceJob): the windows are embedded here
            return refine_slice_tiled(segmenter, image, source, self.tiling, **options)
        segmenter.set_embedding(embedding)
        return refine_slice(segmenter.predictor, source, **options)

    def record(self, result: RefineResult, index, output: SliceRefinement) -> None:
        result.labels[index] = output.labels
        result.slices.append(index)
        result.refined += len(output.refined)
        result.kept.extend(output.kept)
        for object_id, score in output.scores.items():
            result.scores[(index, object_id)] = score


def check_source(labels, layout, name: str = "labels") -> np.ndarray:
    """The source labels as an integer numpy array of the image's labels shape.

    Whole-number floats become the narrowest labels dtype holding their ids.

    Raises
    ------
    InputError
        Another shape, non-integer values, negative ids, or no object at all.
    """
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(layout.labels_shape):
        raise InputError(f"{name} of shape {tuple(labels.shape)} do not match the image's "
                         f"labels shape {tuple(layout.labels_shape)}: give the labels of this "
                         "image.")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        if not finite.all() or not np.array_equal(labels, np.round(labels)):
            raise InputError(f"{name} hold values that are not whole-number ids: labels are "
                             "integer object ids, 0 = background.")
        if labels.size and labels.min() < 0:
            raise InputError(f"{name} hold negative ids: relabel them (0 = background).")
        labels = labels.astype(labels_dtype(int(labels.max()) if labels.size else 0))
    elif labels.dtype.kind not in "iu":
        raise InputError(f"{name} have type {labels.dtype}: labels are integer object ids, "
                         "0 = background.")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InputError(f"{name} hold negative ids (lowest {labels.min()}): ids are 0 for "
                         "background and positive for objects; relabel them.")
    if not labels.any():
        raise InputError(f"{name} hold no objects (every value is 0): nothing to refine.")
    return labels


def check_settings(score_threshold: float, iou_threshold: float, batch_size: int) -> None:
    """Refuse thresholds out of range (or NaN) and batch sizes below 1.

    ``score_threshold`` may go down to -1 (no object is kept for its score: an
    untrained model predicts IoUs below 0); ``iou_threshold`` is from 0 to 1.
    """
    if not -1.0 <= float(score_threshold) <= 1.0:
        raise InputError(f"score_threshold must be from -1 to 1, got {score_threshold!r}.")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise InputError(f"iou_threshold must be from 0 to 1, got {iou_threshold!r}.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")


def prepare_refine(image, labels, *, slices: Sequence[tuple[int, ...]] | None = None,
                   out=None, score_threshold: float = 0.5, iou_threshold: float = 0.5,
                   use_mask: bool = True, use_point: bool = False, hq_token_only: bool = True,
                   batch_size: int = 32, tiling=None, **plan_kwargs
                   ) -> tuple[SlicePlan, RefineJob, RefineResult]:
    """Plan, job and result of a refinement, checked before any model work.

    The plan visits the slices (of ``slices``, default all) that hold objects. The result's
    labels are ``out`` (filled with the source first) or a copy of the source.
    """
    check_settings(score_threshold, iou_threshold, batch_size)
    plan = plan_slices(image, slices=slices, **plan_kwargs)
    source = check_source(labels, plan.layout)
    indices = [i for i in plan.indices if source[i].any()]
    objects = sum(len(object_windows(source[i])) for i in indices)
    size = batch_size_for(plan.layout.spatial_shape, batch_size)
    steps = max(1, math.ceil(objects / size)) if len(indices) == 1 else 1
    if out is None:
        target = source.copy()
    else:
        if tuple(out.shape) != tuple(source.shape):
            raise InputError(f"out of shape {tuple(out.shape)} does not match the labels "
                             f"{tuple(source.shape)}.")
        target = out
        target[...] = source
    job = RefineJob(source, float(score_threshold), float(iou_threshold), bool(use_mask),
                    bool(use_point), bool(hq_token_only), int(batch_size), steps, tiling)
    return (SlicePlan(plan.layout, plan.contrast_limits, indices), job,
            RefineResult(target, objects=objects))


def refine_labels(image, labels, model=None, *, segmenter=None, cache=None, encode=None,
                  slices: Sequence[tuple[int, ...]] | None = None, out=None,
                  score_threshold: float = 0.5, iou_threshold: float = 0.5,
                  use_mask: bool = True, use_point: bool = False, hq_token_only: bool = True,
                  batch_size: int = 32, encoder_batch_size: int | None = None,
                  contrast_limits: tuple[float, float] | None = None,
                  tiling=DEFAULT_TILING, progress: Progress | None = None,
                  should_stop: ShouldStop | None = None, **layout_kwargs) -> RefineResult:
    """Refine every object of ``labels`` with HQ-SAM, each keeping its id.

    Parameters
    ----------
    image : array-like
        N-D image (numpy, dask, zarr): ``(..., H, W)``, optionally RGB or with a channel
        axis (``rgb``, ``channel_axis``, ``channel``, ``axes``, ``layout`` in
        ``layout_kwargs``).
    labels : array-like
        Source labels of the image's labels shape ``(..., H, W)``, 0 background; not
        modified.
    model : HQSam or SliceSegmenter, optional
        Needed unless ``segmenter`` is given; a segmenter here is used as ``segmenter``.
    segmenter : SliceSegmenter, optional
        Reuse one (and its embedding cache).
    cache, encode
        For the segmenter built from ``model`` (see :class:`~.segmenter.SliceSegmenter`).
    slices : sequence of tuple of int, optional
        Only these slices (default: every slice holding objects).
    out : array-like, optional
        Array of the labels' shape to write into (e.g. a zarr array); default a copy.
    score_threshold : float
        An object whose HQ mask has a predicted IoU below this keeps its source mask.
    iou_threshold : float
        An object whose HQ mask overlaps its source mask by an IoU below this keeps it.
    use_mask, use_point : bool
        Prompt with the source mask as mask logits (default) / with its most interior
        point, besides the box.
    hq_token_only : bool
        HQ logits alone (default) or SAM + HQ logits.
    batch_size : int
        Prompts per decoder call.
    encoder_batch_size : int, optional
        Slices embedded at once (see :func:`~.runner.run_slices`).
    contrast_limits : (lo, hi), optional
        Default: the whole image's (napari's default).
    tiling : Tiling or None
        Slices longer than ``tiling.tile`` on a side are refined tile by tile at native
        resolution (:func:`refine_slice_tiled`; default 1024 px tiles); None resizes
        each slice whole to the model input.
    progress, should_stop : callable, optional
        As in :mod:`.runner`: a step is a slice (a decoder call for a single slice).
        A cancelled run keeps the slices it finished; the others hold the source.

    Returns
    -------
    RefineResult
        Labels with the same ids per slice, ``refined``, ``kept`` (with reasons),
        ``scores`` ``(slice, id) -> predicted IoU``.
    """
    from .segmenter import SliceSegmenter

    start = time.perf_counter()
    plan, job, result = prepare_refine(
        image, labels, slices=slices, out=out, score_threshold=score_threshold,
        iou_threshold=iou_threshold, use_mask=use_mask, use_point=use_point,
        hq_token_only=hq_token_only, batch_size=batch_size, contrast_limits=contrast_limits,
        tiling=tiling, **layout_kwargs)
    if segmenter is None and isinstance(model, SliceSegmenter):
        segmenter = model
    if segmenter is None:
        if model is None:
            raise InputError("refine_labels needs a model or a segmenter.")
        segmenter = SliceSegmenter(model, cache=cache, encode=encode)
    run_slices(job, image, plan, segmenter, result, batch_size=encoder_batch_size,
               progress=progress, should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result


def refine_labels_distributed(image, labels, spec, *, client=None, scheduler: str | None = None,
                              n_workers: int | None = None, processes: bool = True,
                              slices=None, out=None, score_threshold: float = 0.5,
                              iou_threshold: float = 0.5, use_mask: bool = True,
                              use_point: bool = False, hq_token_only: bool = True,
                              batch_size: int = 32, contrast_limits=None,
                              tiling=DEFAULT_TILING, progress: Progress | None = None,
                              should_stop: ShouldStop | None = None,
                              **layout_kwargs) -> RefineResult:
    """:func:`refine_labels` with one Dask task per slice (identical labels).

    ``spec`` (a :class:`~.distributed.ModelSpec`), ``client``, ``scheduler``,
    ``n_workers``, ``processes``: as in :func:`~.distributed.run_slices_distributed`.
    """
    from .distributed import run_slices_distributed

    start = time.perf_counter()
    plan, job, result = prepare_refine(
        image, labels, slices=slices, out=out, score_threshold=score_threshold,
        iou_threshold=iou_threshold, use_mask=use_mask, use_point=use_point,
        hq_token_only=hq_token_only, batch_size=batch_size, contrast_limits=contrast_limits,
        tiling=tiling, **layout_kwargs)
    run_slices_distributed(job, image, plan, spec, result, client=client, scheduler=scheduler,
                           n_workers=n_workers, processes=processes, progress=progress,
                           should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result
