"""Segment everything on a slice larger than the model input, tile by tile, without seams.

Each tile of the grid (:mod:`.tiles`) is segmented alone at native resolution by the
job's own per-image method (the point grid, or seeds). Its objects are then merged
into the slice's labels by three rules:

- **ownership**: a tile keeps the objects whose centroid lies in its core; the others
  belong to the neighbour whose core holds them, which sees them too (the halo);
- **whole objects**: an object reaching an edge of its tile that lies inside the
  slice was cut by the tile; it is decoded again as a prompt (its box and its most
  interior point) routed like any tiled prompt (:func:`~.tiled.decode_object`), which
  widens the window until the object fits. Windows beyond the grid cost an encoder
  run each; once a slice has used :data:`EXTRA_WINDOWS` times as many as its grid
  has tiles, cut objects keep what their tile saw (an untrained or badly fitting model
  cuts nearly every mask, and would otherwise cost one encoder run per object);
- **one id per object**: an object whose pixels are mostly (over half) labelled
  already is the same object seen from another tile: its unlabelled pixels join the
  id that holds most of it (a long object seen whole by no single window is thus
  still one object); otherwise it paints background only, so objects never overlap.

Seeds given per slice (:class:`~.seeds.GivenSeeds`) go to the tile whose core holds
them, so each is decoded once and every mask it gives is kept.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from ..errors import Cancelled
from .labels import LABELS_DTYPE
from .prompts import ObjectPrompt
from .tiled import cut_by_window, decode_object
from .tiles import Tiling, Window

#: an object this much (fraction of its area) already labelled is a duplicate
DUPLICATE_FRACTION = 0.5
#: encoder runs beyond the grid a tiled slice may use, in multiples of its grid's tiles
EXTRA_WINDOWS = 2


def tiles_and_cores(tiling: Tiling, shape: tuple[int, int]) -> list[tuple[Window, Window]]:
    """``(tile, core)`` windows of a slice of ``shape``, row by row."""
    rows, cols = (tiling.axis_tiles(n) for n in shape)
    return [(Window(r[2], c[2], r[3] - r[2], c[3] - c[2]),
             Window(r[0], c[0], r[1] - r[0], c[1] - c[0])) for r in rows for c in cols]


def segment_everything_tiled(job, segmenter, index: tuple[int, ...], source, tiling: Tiling,
                             step=None, should_stop=None) -> np.ndarray:
    """``(H, W)`` uint32 labels of one tiled slice, ids ``1..n`` (module doc).

    Parameters
    ----------
    job : EverythingJob or SeededJob
        Its ``segment_image(segmenter, index, image, embedding, step, should_stop)``
        segments one tile crop into ``(h, w)`` labels.
    segmenter : SliceSegmenter
    index : tuple of int
        The slice's leading index.
    source : SliceSource or ArraySource
        Reads the slice's windows as uint8 RGB.
    tiling : Tiling
    step : callable, optional
        ``step(k)``: ``k`` of the job's ``steps`` done on this slice.
    should_stop : callable, optional
        Asked between tiles; True raises :class:`~napari_hq_sam.errors.Cancelled`.
    """
    shape = tuple(source.shape)
    labels = np.zeros(shape, LABELS_DTYPE)
    pairs = tiles_and_cores(tiling, shape)
    extra_left = EXTRA_WINDOWS * len(pairs)
    next_id = 1
    for k, (window, core) in enumerate(pairs):
        if should_stop is not None and should_stop():
            raise Cancelled
        crop = source.read(window)
        embedding = segmenter.embeddings([crop])[0]
        runs = getattr(segmenter, "computed", 0)  # encoder runs so far, this tile's included
        tile_job, owned_by_seed = _tile_job(job, index, window, core)
        tile_labels = tile_job.segment_image(segmenter, index, crop, embedding, None,
                                             should_stop)
        for obj, region in enumerate(ndimage.find_objects(tile_labels), start=1):
            if region is None:
                continue
            mask = tile_labels[region] == obj
            top, left = window.top + region[0].start, window.left + region[1].start
            if not owned_by_seed and not _centroid_in(mask, (top, left), core):
                continue
            full = np.zeros(window.shape, bool)
            full[region] = mask
            if cut_by_window(full, window, shape) and extra_left > 0:
                placed = decode_object(segmenter, source, _prompt_of(mask, (top, left)),
                                       window, embedding, tiling)
                (top, left), mask = placed.origin, placed.mask
                segmenter.set_embedding(embedding)  # the tile's other objects come next
                extra_left -= getattr(segmenter, "computed", 0) - runs
                runs = getattr(segmenter, "computed", 0)
            if _paste_new(labels, mask, (top, left), next_id):
                next_id += 1
        if step is not None:
            step((k + 1) * job.steps // len(pairs))
    return labels


def _tile_job(job, index, window: Window, core: Window):
    """The job for one tile, and whether its objects are owned by their seeds."""
    from .seeds import GivenSeeds

    seeds = getattr(job, "seeds", None)
    if not isinstance(seeds, GivenSeeds):
        return job, False
    points = np.asarray(seeds.points.get(tuple(index), np.zeros((0, 2))), float).reshape(-1, 2)
    inside = ((points[:, 0] >= core.left) & (points[:, 0] < core.right)
              & (points[:, 1] >= core.top) & (points[:, 1] < core.bottom))
    shifted = points[inside] - [window.left, window.top]
    return replace(job, seeds=replace(seeds, points={tuple(index): shifted})), True


def _centroid_in(mask: np.ndarray, origin: tuple[int, int], core: Window) -> bool:
    rows, cols = np.nonzero(mask)
    y, x = origin[0] + rows.mean(), origin[1] + cols.mean()
    return core.top <= y < core.bottom and core.left <= x < core.right


def _prompt_of(mask: np.ndarray, origin: tuple[int, int]) -> ObjectPrompt:
    """Box of a cut object's visible part and a point at its most interior pixel."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    top, left = origin
    return ObjectPrompt(points=[[left + c, top + r]], labels=[1],
                        box=[left, top, left + mask.shape[1] - 1, top + mask.shape[0] - 1])


def _paste_new(labels: np.ndarray, mask: np.ndarray, origin: tuple[int, int],
               object_id: int) -> bool:
    """Paint ``mask`` on background only: as ``object_id``, or as the object it duplicates.

    Returns whether ``object_id`` was used.
    """
    top, left = origin
    region = labels[top:top + mask.shape[0], left:left + mask.shape[1]]
    area = int(mask.sum())
    if area == 0:
        return False
    under = region[mask]
    if np.count_nonzero(under) > DUPLICATE_FRACTION * area:
        ids, counts = np.unique(under[under > 0], return_counts=True)
        region[mask & (region == 0)] = ids[np.argmax(counts)]
        return False
    region[mask & (region == 0)] = object_id
    return True
