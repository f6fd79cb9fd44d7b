"""Seeded segment everything: one prompt per seed instead of a grid of points.

Each seed (see :mod:`napari_hq_sam.engine.seeds`) is decoded into one HQ mask on
the image's embedding, then the masks go through the filters of the grid mode
(:class:`~napari_hq_sam.automatic.AutoMaskConfig`: predicted IoU, stability
score, box NMS, optionally small regions) and become labels without overlaps.

**The prompt.** By default a seed is one positive point, decoded with
``multimask_output=True`` (SAM's best of its three masks by predicted IoU, plus the
HQ mask), as the grid mode decodes its points: a seed sits near an object's
centre, and SAM chooses among whole object, part and cluster with the object's
size taken from the image. A box of the expected diameter around the seed
(``box=True``) tells SAM the size instead; SAM follows boxes closely (it is
trained on tight boxes), so a box also imposes the diameter's error on every
object, cutting objects larger than it and taking in neighbours of smaller
ones. It is offered for crowded slices where point masks merge neighbours.

**Windows.** With an expected diameter, a mask is computed in a window of
:data:`WINDOW_DIAMETERS` diameters around its seed (the HQ branch at 256 x 256 is
most of a mask's cost, and a nucleus covers a small part of it); the logits
there are those of the whole-slice computation, everything outside counts as
background. A mask that comes within :data:`EDGE_PIXELS` low-resolution pixels of
its window's edge, above the stability score's lower threshold, is computed
again over the whole slice, so an object larger than the window is not cut.
(Parts of a mask that are not connected to the window are not seen.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from segment_anything.utils.amg import MaskData

from .automatic import (
    AutoMaskConfig,
    AutoMasks,
    _Counter,
)
from .automatic_decoder import StagedDecoder
from .automatic_filters import Candidates, box_nms, clean_small_regions, filter_candidates
from .errors import InputError
from .model import HQSam
from .predictor import HQSamPredictor, ImageEmbedding
from .predictor_checks import check_image, describe

# window side of a seed's mask, in expected diameters
WINDOW_DIAMETERS = 4.0
# a mask within this many low-resolution pixels of its window's edge is recomputed
EDGE_PIXELS = 2
# box side in expected diameters, when seeds are decoded with a box
BOX_DIAMETERS = 1.5
# pixels at a window's inner edges that the HQ branch's two 3 x 3 convolutions
# computed from the window's zero padding instead of the neighbouring pixels
RING = 2
# logit given to low-resolution pixels outside a seed's window (background)
OUTSIDE = -1000.0


class SeededMaskGenerator:
    """Segment the objects at given seeds of one image.

    Parameters
    ----------
    model : HQSam or HQSamPredictor
        The model (a predictor is made for it) or a predictor to reuse.
    config : AutoMaskConfig, optional
        Filters (``pred_iou_thresh``, ``stability_score_thresh``, ``box_nms_thresh``,
        ``min_mask_region_area``), decoder settings and ``points_per_batch`` (seeds
        decoded at once); the grid and crop settings are not used.
    box : bool
        Add a box of :data:`BOX_DIAMETERS` expected diameters around each seed
        (needs the diameter).
    """

    def __init__(self, model: HQSam | HQSamPredictor, config: AutoMaskConfig | None = None,
                 box: bool = False):
        if not isinstance(model, HQSam | HQSamPredictor):
            raise InputError(f"model must be an HQSam (from napari_hq_sam.build_hq_sam or "
                             f"load_model) or an HQSamPredictor, got {describe(model)}.")
        self.predictor = HQSamPredictor(model) if isinstance(model, HQSam) else model
        self.config = config or AutoMaskConfig()
        self.box = bool(box)

    def n_steps(self, n_seeds: int) -> int:
        """Seed batches of ``n_seeds`` seeds (the unit of ``progress``)."""
        return -(-n_seeds // self.config.points_per_batch)

    @torch.no_grad()
    def generate(self, image: np.ndarray, seeds: np.ndarray, diameter: float | None = None,
                 embedding: ImageEmbedding | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> AutoMasks:
        """Masks of the objects at ``seeds``.

        Parameters
        ----------
        image : np.ndarray
            (H, W, 3) uint8 RGB image.
        seeds : np.ndarray
            (N, 2) seeds, (X, Y) pixels of ``image``.
        diameter : float, optional
            Expected object diameter in pixels: masks in windows around the seeds,
            and the box size with ``box=True``. None: whole-image masks.
        embedding : ImageEmbedding, optional
            Cached embedding of ``image``.
        should_stop, progress : callable, optional
            As :meth:`~napari_hq_sam.automatic.AutomaticMaskGenerator.generate`, per
            batch of seeds.

        Returns
        -------
        AutoMasks
            The kept masks; ``points`` are their seeds.
        """
        predictor, c = self.predictor, self.config
        check_image(image, "image", predictor.transform.target_length)
        seeds = _checked_seeds(seeds, image.shape[:2])
        if self.box and diameter is None:
            raise InputError("seeds decoded with a box need the expected object diameter.")
        if embedding is not None:
            predictor.set_image_embedding(embedding)
        else:
            predictor.set_image(image)
        h, w = image.shape[:2]
        decoder = StagedDecoder(predictor.model, predictor.features, predictor.hq_features)
        counter = _Counter(self.n_steps(len(seeds)), should_stop, progress)
        data = Candidates()
        for start in range(0, len(seeds), c.points_per_batch):
            counter.check()
            batch = seeds[start:start + c.points_per_batch]
            data.cat(filter_candidates(self._decode(decoder, batch, diameter), c,
                                       predictor.model.mask_threshold, [0, 0, w, h], (h, w)))
            counter.step()
        if len(dict(data.items()).get("rles", [])):
            data.filter(box_nms(data["boxes"], data["iou_preds"], c.box_nms_thresh))
            data["crop_boxes"] = torch.tensor([[0, 0, w, h]] * len(data["rles"]),
                                              dtype=torch.float)
            if c.min_mask_region_area > 0:
                data = clean_small_regions(data, c.min_mask_region_area, c.box_nms_thresh)
        return AutoMasks.from_mask_data(data, (h, w))

    def _decode(self, decoder: StagedDecoder, seeds: np.ndarray, diameter) -> MaskData:
        """Candidates of one batch of seeds: full-resolution logits of those kept by IoU."""
        predictor, c = self.predictor, self.config
        size = predictor.original_size
        device = predictor.device
        coords = torch.as_tensor(predictor.transform.apply_coords(seeds, size),
                                 dtype=torch.float, device=device)[:, None]
        labels = torch.ones((len(seeds), 1), dtype=torch.int, device=device)
        boxes = None
        if self.box:
            half = BOX_DIAMETERS * diameter / 2
            xyxy = np.concatenate([seeds - half, seeds + half], axis=1)
            xyxy = np.clip(xyxy, 0, [size[1] - 1, size[0] - 1] * 2)
            boxes = torch.as_tensor(predictor.transform.apply_boxes(xyxy, size),
                                    dtype=torch.float, device=device)
        tokens = decoder.tokens(coords, labels, boxes, multimask_output=c.multimask_output,
                                min_score=c.pred_iou_thresh if c.pred_iou_thresh > 0 else None)
        kept_seeds = seeds[tokens.index.cpu().numpy()]
        low_res = self._low_res(decoder, tokens, kept_seeds, diameter)
        logits = predictor.model.postprocess_masks(low_res, predictor.input_size, size)
        return MaskData(masks=logits[:, 0], iou_preds=tokens.scores,
                        points=torch.as_tensor(kept_seeds, dtype=torch.float))

    def _low_res(self, decoder: StagedDecoder, tokens, seeds: np.ndarray, diameter):
        """(B, 1, 256, 256) logits; in windows around the seeds when that is smaller."""
        c = self.config
        grid = decoder.grid[0]
        size = window_tokens(diameter, self.predictor.original_size, grid)
        if size is None or not len(tokens):
            return decoder.masks(tokens, c.hq_token_only)
        # the seed's token, the window centred on it and kept inside the grid
        scale = grid / max(self.predictor.original_size)
        centre = np.floor(seeds[:, ::-1] * scale).astype(int)
        origins = np.clip(centre - size // 2, 0, grid - size)
        windowed = decoder.masks(tokens, c.hq_token_only,
                                 torch.as_tensor(origins, device=decoder.device), size)
        full = windowed.new_full((len(tokens), 1, 4 * grid, 4 * grid), OUTSIDE)
        loose = self.predictor.model.mask_threshold - c.stability_score_offset
        redo = []
        for i, (r, col) in enumerate(4 * origins):
            r1, c1 = r + 4 * size, col + 4 * size
            # the outermost pixels of a side inside the grid saw the zero padding of the
            # HQ branch's two 3 x 3 convolutions at the window's edge
            top, left = RING * int(r > 0), RING * int(col > 0)
            bottom = 4 * size - RING * int(r1 < 4 * grid)
            right = 4 * size - RING * int(c1 < 4 * grid)
            valid = windowed[i, 0, top:bottom, left:right]
            full[i, 0, r + top:r + bottom, col + left:col + right] = valid
            if _reaches_edge(valid > loose, (r > 0, r1 < 4 * grid, col > 0, c1 < 4 * grid)):
                redo.append(i)
        if redo:
            full[redo] = decoder.masks(tokens.select(torch.as_tensor(redo)), c.hq_token_only)
        return full


def window_tokens(diameter: float | None, image_size, grid: int = 64) -> int | None:
    """Side in tokens of a seed's window, or None when it would not be much smaller
    than the grid (or no diameter is known)."""
    if diameter is None:
        return None
    size = math.ceil(WINDOW_DIAMETERS * diameter * grid / max(image_size)) + 2
    return None if size > grid * 3 // 4 else size


def _reaches_edge(mask: torch.Tensor, inner_sides) -> bool:
    """True when ``mask`` (h, w) has a pixel within :data:`EDGE_PIXELS` of a side that
    lies inside the grid (sides: top, bottom, left, right)."""
    top, bottom, left, right = inner_sides
    e = EDGE_PIXELS
    return bool((top and mask[:e].any()) or (bottom and mask[-e:].any())
                or (left and mask[:, :e].any()) or (right and mask[:, -e:].any()))


def _checked_seeds(seeds, size) -> np.ndarray:
    """(N, 2) float XY seeds inside an image of ``size`` (H, W), or an InputError."""
    seeds = np.asarray(seeds, dtype=float)
    if seeds.size == 0:
        return np.zeros((0, 2))
    if seeds.ndim != 2 or seeds.shape[1] != 2:
        raise InputError(f"seeds must be an (N, 2) array of (X, Y) pixels, got shape "
                         f"{seeds.shape}.")
    h, w = size
    if not np.isfinite(seeds).all():
        raise InputError("seeds must be finite (X, Y) pixel coordinates.")
    outside = (seeds[:, 0] < 0) | (seeds[:, 0] > w) | (seeds[:, 1] < 0) | (seeds[:, 1] > h)
    if outside.any():
        x, y = seeds[np.argmax(outside)]
        raise InputError(f"{int(outside.sum())} seeds lie outside the {w} x {h} image, e.g. "
                         f"(X {x:g}, Y {y:g}).")
    return seeds
