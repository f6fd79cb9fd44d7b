"""Refine the objects of one 2D slice: decode their prompts, judge, paint without overlaps.

Part of :mod:`.refine` (see there for the rules); :func:`refine_slice` on a slice the
model sees whole, :func:`refine_slice_tiled` tile by tile on a larger one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import Cancelled
from .refine_judge import OVERLAPPED, _Candidate, judge, resolve_overlaps
from .refine_prompts import batch_size_for, decode_batch, object_prompts, object_windows
from .runner import ShouldStop

# Pixels an object's box is grown by before it is routed to a tile, so that its refined
# mask has room to move its boundary inside the window the model sees.
TILE_MARGIN = 16


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
