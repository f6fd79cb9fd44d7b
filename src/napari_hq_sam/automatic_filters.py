"""The filters of segment everything: predicted IoU, stability, box NMS, small regions.

The steps of the official ``SamAutomaticMaskGenerator`` between decoding and the
result, on Meta's ``segment_anything.utils.amg`` helpers; shared by the grid
(:mod:`napari_hq_sam.automatic`) and seeded (:mod:`napari_hq_sam.automatic_seeded`)
modes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    uncrop_masks,
)
from torchvision.ops.boxes import batched_nms

from .engine.labels import remove_small_regions


def rle_to_mask(rle: dict) -> np.ndarray:
    """(H, W) bool mask of an uncompressed RLE (Meta's column-major format).

    Meta's ``rle_to_mask`` with one ``np.repeat`` instead of a Python loop over the
    runs: a ragged mask has tens of thousands of them.
    """
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate, starting with background
    return np.repeat(values, counts).reshape(w, h).T

if TYPE_CHECKING:
    from .automatic import AutoMaskConfig


class Candidates(MaskData):
    """Meta's ``MaskData`` whose :meth:`cat` takes the new batch's lists as they are.

    ``MaskData.cat`` deep-copies lists, i.e. every RLE's run counts, twice per mask
    (once per batch, once per crop); a ragged mask has tens of thousands of runs,
    so the copies can cost more than decoding. The batches given here are made
    for this very concatenation and not used after it.
    """

    def cat(self, new: MaskData) -> None:
        """Append ``new``'s entries (tensors, arrays or lists) to these."""
        for key, value in new.items():
            old = self._stats.get(key)
            if old is None:
                self._stats[key] = value
            elif isinstance(value, torch.Tensor):
                self._stats[key] = torch.cat([old, value], dim=0)
            elif isinstance(value, list):
                self._stats[key] = old + value
            else:
                self._stats[key] = np.concatenate([old, value], axis=0)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression of boxes, all of one category (torchvision's ``batched_nms``).

    Parameters
    ----------
    boxes : torch.Tensor
        (N, 4) XYXY boxes.
    scores : torch.Tensor
        (N,) scores; of two boxes with IoU above ``iou_threshold`` the lower goes.
    iou_threshold : float

    Returns
    -------
    torch.Tensor
        int64 indices of the kept boxes, in order of decreasing score.
    """
    boxes = torch.as_tensor(boxes).float()
    scores = torch.as_tensor(scores, device=boxes.device).float()
    return batched_nms(boxes, scores, torch.zeros(len(boxes), dtype=torch.int64,
                                                  device=boxes.device), iou_threshold)


def filter_candidates(data: MaskData, config: AutoMaskConfig, mask_threshold: float,
                      crop_box: list[int], orig_size: tuple[int, int]) -> MaskData:
    """Filter one batch of candidate masks and compress the survivors to RLE.

    Parameters
    ----------
    data : MaskData
        ``masks`` (B, h, w) float logits in the crop's frame, ``iou_preds`` (B,),
        ``points`` (B, 2) XY in the crop.
    config : AutoMaskConfig
        Thresholds (``pred_iou_thresh``, ``stability_score_thresh``, offset).
    mask_threshold : float
        Logit threshold of a mask (0 for SAM).
    crop_box : list of int
        XYXY crop in the image; masks touching a crop edge inside the image go.
    orig_size : tuple of int
        (H, W) of the whole image.

    Returns
    -------
    MaskData
        The same ``data``, filtered, with ``stability_score``, ``boxes`` (XYXY, crop
        frame) and ``rles`` (image frame) instead of ``masks``. Empty masks are
        dropped too (the official code keeps them when both thresholds are 0).
    """
    if config.pred_iou_thresh > 0.0:
        data.filter(data["iou_preds"] > config.pred_iou_thresh)
    stability = calculate_stability_score(data["masks"], mask_threshold,
                                          config.stability_score_offset)
    data["stability_score"] = torch.nan_to_num(stability, nan=0.0)
    if config.stability_score_thresh > 0.0:
        data.filter(data["stability_score"] >= config.stability_score_thresh)
    data["masks"] = data["masks"] > mask_threshold
    data["boxes"] = batched_mask_to_box(data["masks"])
    orig_h, orig_w = orig_size
    near_edge = is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
    empty = ~data["masks"].flatten(1).any(1)
    data.filter(~(near_edge | empty))
    data["rles"] = mask_to_rle_pytorch(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
    del data["masks"]
    return data


def clean_small_regions(data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
    """Fill small holes, drop small islands, then NMS again preferring unchanged masks.

    Parameters
    ----------
    data : MaskData
        With ``rles`` (image frame) and ``boxes`` (N, 4) XYXY.
    min_area : int
        Holes and islands with fewer pixels are removed.
    nms_thresh : float
        Box IoU threshold of the final NMS.

    Returns
    -------
    MaskData
        Filtered ``data`` with changed masks re-encoded and their boxes updated.
    """
    if len(dict(data.items()).get("rles", [])) == 0:
        return data
    masks, unchanged = [], []
    for rle in data["rles"]:
        mask, changed_holes = remove_small_regions(rle_to_mask(rle), min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        masks.append(torch.as_tensor(mask))
        unchanged.append(float(not (changed_holes or changed_islands)))
    masks = torch.stack(masks)
    boxes = batched_mask_to_box(masks)
    keep = box_nms(boxes, torch.as_tensor(unchanged), nms_thresh)
    for i in keep.tolist():
        if unchanged[i] == 0.0:
            data["rles"][i] = mask_to_rle_pytorch(masks[i][None])[0]
            data["boxes"][i] = boxes[i].to(data["boxes"])
    data.filter(keep)
    return data
