"""Automatic ("segment everything") HQ mask generation for one 2D image.

A grid of single positive points is decoded in batches on one image embedding;
candidates are filtered by predicted IoU and stability score, duplicates removed
by box non-maximum suppression, and optionally small regions and holes cleaned
up and the image processed again in overlapping crops. This follows the
official HQ-SAM ``SamAutomaticMaskGenerator`` (same parameters, defaults and
order of steps) on this project's :class:`~napari_hq_sam.predictor.HQSamPredictor`
and Meta's ``segment_anything.utils.amg`` helpers.

Decoder settings match the official generator: ``multimask_output=True`` (for
each point SAM's best of its three multimask tokens, by predicted IoU, is
combined with the HQ token: **one** mask per point, not three) and
``hq_token_only=False`` (SAM + HQ logits, which the HQ-SAM authors advise for
scenes with many objects). The score of a mask is SAM's predicted IoU.

Whole stacks (layouts, caching, z stitching, the Dask path) are run by
:mod:`napari_hq_sam.engine.everything`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from segment_anything.utils.amg import (
    MaskData,
    batch_iterator,
    build_all_layer_point_grids,
    generate_crop_boxes,
    uncrop_boxes_xyxy,
    uncrop_points,
)
from torchvision.ops.boxes import box_area

from .automatic_decoder import StagedDecoder
from .automatic_filters import (
    Candidates,
    box_nms,
    clean_small_regions,
    filter_candidates,
    rle_to_mask,
)
from .engine.labels import masks_to_labels
from .errors import Cancelled, InputError
from .model import HQSam
from .predictor import HQSamPredictor, ImageEmbedding
from .predictor_checks import check_image, describe


@dataclass
class AutoMaskConfig:
    """Parameters of automatic mask generation; defaults are the official ones.

    The official defaults were chosen for SAM ViT-H on natural images; for
    nuclei, lower ``pred_iou_thresh``/``stability_score_thresh`` or a
    ``min_mask_region_area`` often help.
    """

    # Points sampled along one side of the image (grid of points_per_side**2).
    points_per_side: int = 32
    # Points decoded at once; higher is faster on a GPU, needs more memory.
    points_per_batch: int = 64
    # Keep masks whose predicted IoU is above this (0 disables).
    pred_iou_thresh: float = 0.88
    # Keep masks whose stability score is at least this (0 disables).
    stability_score_thresh: float = 0.95
    # Logit offset around the 0 threshold used for the stability score.
    stability_score_offset: float = 1.0
    # Box IoU above which NMS drops the lower-scoring of two masks.
    box_nms_thresh: float = 0.7
    # Extra crop layers; layer i has (2**i)**2 crops (0: whole image only).
    crop_n_layers: int = 0
    # Box IoU for NMS between crops (masks from smaller crops preferred).
    crop_nms_thresh: float = 0.7
    # Overlap of the crops of the first layer, as a fraction of the image side.
    crop_overlap_ratio: float = 512 / 1500
    # Points per side in crop layer n are points_per_side / factor**n.
    crop_n_points_downscale_factor: int = 1
    # >0: fill holes and drop islands smaller than this many pixels, then NMS again.
    min_mask_region_area: int = 0
    # Official AMG decodes with multimask_output=True: SAM's best of 3 tokens + HQ.
    multimask_output: bool = True
    # Official AMG uses SAM + HQ logits (False), advised for many objects.
    hq_token_only: bool = False

    def __post_init__(self):
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise InputError("points_per_side and points_per_batch must be at least 1")
        if self.crop_n_layers < 0 or self.min_mask_region_area < 0:
            raise InputError("crop_n_layers and min_mask_region_area must not be negative")

    def to_dict(self) -> dict:
        """Plain dict of the parameters (for saving next to results)."""
        return asdict(self)

    @property
    def layer_point_grids(self) -> list[np.ndarray]:
        """One (K, 2) grid per crop layer, (X, Y) normalised to [0, 1].

        (Not named ``point_grids``: the official generator takes an argument of that
        name that replaces the grid, which this config does not offer.)
        """
        return build_all_layer_point_grids(self.points_per_side, self.crop_n_layers,
                                           self.crop_n_points_downscale_factor)

    @property
    def n_steps(self) -> int:
        """Number of point batches in one image (the unit of ``progress``)."""
        b = self.points_per_batch
        return sum(-(-len(g) // b) * (4 ** i) for i, g in enumerate(self.layer_point_grids))


@dataclass
class AutoMasks:
    """Masks found in one image (possibly overlapping; see :meth:`to_labels`).

    Attributes
    ----------
    rles : list of dict
        N masks as uncompressed RLE (``segment_anything``'s format); decode one
        with :meth:`mask`.
    boxes : np.ndarray
        (N, 4) float boxes, XYXY in pixels of the image.
    predicted_iou : np.ndarray
        (N,) SAM's predicted IoU (the score used for NMS and overlaps).
    stability_score : np.ndarray
        (N,) IoU of the mask thresholded at +offset and -offset.
    points : np.ndarray
        (N, 2) the prompt point of each mask, (X, Y) in pixels.
    crop_boxes : np.ndarray
        (N, 4) crop each mask came from, XYXY.
    image_size : tuple of int
        (H, W) of the image.
    """

    rles: list
    boxes: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray
    image_size: tuple[int, int] = field(default=(0, 0))

    def __len__(self) -> int:
        return len(self.rles)

    def mask(self, index: int) -> np.ndarray:
        """(H, W) bool mask number ``index``."""
        return rle_to_mask(self.rles[index])

    def masks(self) -> np.ndarray:
        """(N, H, W) bool array of all masks."""
        return np.stack([self.mask(i) for i in range(len(self))]) if len(self) else \
            np.zeros((0, *self.image_size), dtype=bool)

    def to_labels(self) -> np.ndarray:
        """(H, W) ``uint32`` labels: one id per mask, higher predicted IoU wins overlaps."""
        return masks_to_labels((self.mask(i) for i in range(len(self))), self.predicted_iou,
                               self.image_size)

    @classmethod
    def from_mask_data(cls, data: MaskData, image_size: tuple[int, int]) -> AutoMasks:
        """Build from Meta's ``MaskData`` with keys rles, boxes, iou_preds, ... ."""
        stats = dict(data.items())

        def arr(key, width=None):
            value = stats.get(key, np.zeros((0, width) if width else (0,)))
            return np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value,
                              dtype=float)
        return cls(rles=list(stats.get("rles", [])),
                   boxes=arr("boxes", 4), predicted_iou=arr("iou_preds"),
                   stability_score=arr("stability_score"), points=arr("points", 2),
                   crop_boxes=arr("crop_boxes", 4), image_size=tuple(image_size))


class AutomaticMaskGenerator:
    """Find every object of an image with a grid of point prompts.

    Parameters
    ----------
    model : HQSam or HQSamPredictor
        The model (a predictor is made for it) or a predictor to reuse (anything
        with HQSamPredictor's ``set_image``, ``set_image_embedding``,
        ``predict_torch``, ``transform``, ``device`` and ``model.mask_threshold``).
    config : AutoMaskConfig, optional
        Parameters; the official defaults when None.
    """

    def __init__(self, model: HQSam | HQSamPredictor, config: AutoMaskConfig | None = None):
        if not isinstance(model, HQSam) and not all(
                hasattr(model, name) for name in ("set_image", "predict_torch", "transform")):
            raise InputError(f"model must be an HQSam (from napari_hq_sam.build_hq_sam or "
                             f"load_model) or an HQSamPredictor, got {describe(model)}.")
        self.predictor = HQSamPredictor(model) if isinstance(model, HQSam) else model
        self.config = config or AutoMaskConfig()

    @property
    def point_grids(self) -> list[np.ndarray]:
        """One (K, 2) grid per crop layer, (X, Y) normalised to [0, 1]."""
        return self.config.layer_point_grids

    @property
    def n_steps(self) -> int:
        """Number of point batches in one image (the unit of ``progress``)."""
        return self.config.n_steps

    @torch.no_grad()
    def generate(self, image: np.ndarray, embedding: ImageEmbedding | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> AutoMasks:
        """Generate the masks of one image.

        Parameters
        ----------
        image : np.ndarray
            (H, W, 3) uint8 RGB image.
        embedding : ImageEmbedding, optional
            Cached embedding of the whole ``image`` (skips the encoder for the
            first crop layer); it must come from this very image.
        should_stop : callable, optional
            Checked between point batches; when it returns True :class:`Cancelled`
            is raised.
        progress : callable, optional
            ``progress(done, total)`` after each point batch (total: :attr:`n_steps`).

        Returns
        -------
        AutoMasks
            The kept masks; ``.to_labels()`` makes a labels array.
        """
        check_image(image, "image", self.predictor.transform.target_length)
        orig_size = image.shape[:2]
        if embedding is not None and not isinstance(embedding, ImageEmbedding):
            raise InputError(f"embedding must be an ImageEmbedding (from "
                             f"HQSamPredictor.get_image_embedding), got {describe(embedding)}.")
        if embedding is not None and tuple(embedding.original_size) != orig_size:
            raise InputError(f"embedding is of an image of size {embedding.original_size}, "
                             f"not {orig_size}")
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.config.crop_n_layers,
                                                     self.config.crop_overlap_ratio)
        data = Candidates()
        self._progress = _Counter(self.n_steps, should_stop, progress)
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            whole = layer_idx == 0
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size,
                                        embedding if whole else None))
        if len(crop_boxes) > 1 and len(dict(data.items()).get("rles", [])):
            data.filter(box_nms(data["boxes"], 1 / box_area(data["crop_boxes"]),
                                self.config.crop_nms_thresh))
        if self.config.min_mask_region_area > 0:
            data = self._clean_small_regions(data)
        return AutoMasks.from_mask_data(data, orig_size)

    # -- steps ------------------------------------------------------------------------------
    def _process_crop(self, image, crop_box, layer_idx, orig_size, embedding) -> MaskData:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_size = crop.shape[:2]
        if embedding is not None:
            self.predictor.set_image_embedding(embedding)
        else:
            self.predictor.set_image(crop)
        predictor = self.predictor
        # a stand-in predictor (anything with predict_torch) is asked for whole masks
        self._decoder = (StagedDecoder(predictor.model, predictor.features, predictor.hq_features)
                         if isinstance(predictor, HQSamPredictor) else None)
        points_for_crop = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]
        data = Candidates()
        for (points,) in batch_iterator(self.config.points_per_batch, points_for_crop):
            self._progress.check()
            data.cat(self._process_batch(points, crop_size, crop_box, orig_size))
            self._progress.step()
        data.filter(box_nms(data["boxes"], data["iou_preds"], self.config.box_nms_thresh))
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data["rles"]),
                                          dtype=torch.float).reshape(-1, 4)
        return data

    def _process_batch(self, points: np.ndarray, crop_size, crop_box, orig_size) -> MaskData:
        predictor, c = self.predictor, self.config
        coords = predictor.transform.apply_coords(points, crop_size)
        in_points = torch.as_tensor(coords, dtype=torch.float, device=predictor.device)[:, None]
        in_labels = torch.ones((len(in_points), 1), dtype=torch.int, device=predictor.device)
        if self._decoder is None:
            logits, iou_preds, _ = predictor.predict_torch(
                in_points, in_labels, multimask_output=c.multimask_output,
                return_logits=True, hq_token_only=c.hq_token_only)
            data = MaskData(masks=logits[:, 0], iou_preds=iou_preds[:, 0],
                            points=torch.as_tensor(points))
        else:
            data = self._decode_staged(in_points, in_labels, points)
        return filter_candidates(data, c, predictor.model.mask_threshold, crop_box, orig_size)

    def _decode_staged(self, in_points, in_labels, points: np.ndarray) -> MaskData:
        """Candidates of one batch; masks only for prompts that pass the IoU filter.

        The predicted-IoU filter needs only the transformer's IoU token: the masks
        (HQ branch at 256 x 256, upscaling to the image) of the prompts it drops are
        never computed. The others go through the official filters unchanged.
        """
        predictor, c, decoder = self.predictor, self.config, self._decoder
        tokens = decoder.tokens(in_points, in_labels, multimask_output=c.multimask_output,
                                min_score=c.pred_iou_thresh if c.pred_iou_thresh > 0 else None)
        keep = tokens.index
        low_res = decoder.masks(tokens, hq_token_only=c.hq_token_only)
        logits = predictor.model.postprocess_masks(low_res, predictor.input_size,
                                                   predictor.original_size)
        return MaskData(masks=logits[:, 0], iou_preds=tokens.scores,
                        points=torch.as_tensor(points[keep.cpu().numpy()]))

    def _clean_small_regions(self, data: MaskData) -> MaskData:
        nms_thresh = max(self.config.box_nms_thresh, self.config.crop_nms_thresh)
        return clean_small_regions(data, self.config.min_mask_region_area, nms_thresh)


class _Counter:
    """Counts point batches, reports progress and raises :class:`Cancelled` on request."""

    def __init__(self, total, should_stop, progress):
        self.done, self.total = 0, total
        self.should_stop, self.progress = should_stop, progress

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("automatic segmentation cancelled")

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
