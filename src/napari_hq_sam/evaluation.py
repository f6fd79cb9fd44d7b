"""Score HQ-SAM against ground-truth labels the way HQ-SAM is evaluated.

For every ground-truth object of every slice: its tight box as the only prompt,
single-mask output, the HQ mask alone (``hq_token_only=True``) upsampled to the
image size and thresholded at 0, then mask IoU and boundary IoU
(:mod:`napari_hq_sam.metrics`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ._groundtruth import check_labels, iter_slices, object_boxes
from .errors import InputError
from .metrics import boundary_width, mean_scores, object_scores
from .predictor import HQSamPredictor


@dataclass
class ObjectScore:
    """Scores of one ground-truth object."""

    slice_index: int
    label: int
    iou: float
    boundary_iou: float


@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate`.

    Attributes
    ----------
    mIoU, mBIoU : float
        Mean mask IoU and mean boundary IoU over objects (NaN without objects).
    n_objects : int
        Objects scored.
    objects : list of ObjectScore
        Per-object scores.
    cancelled : bool
        True when ``should_stop`` ended the run early (the means cover what was scored).
    """

    mIoU: float
    mBIoU: float
    n_objects: int
    objects: list[ObjectScore] = field(default_factory=list)
    cancelled: bool = False

    @classmethod
    def from_objects(cls, objects: list[ObjectScore], cancelled: bool = False):
        miou, mbiou = mean_scores([o.iou for o in objects], [o.boundary_iou for o in objects])
        return cls(miou, mbiou, len(objects), objects, cancelled)

    def summary(self) -> dict:
        """``{"mIoU", "mBIoU", "n_objects", "cancelled"}``."""
        return {"mIoU": self.mIoU, "mBIoU": self.mBIoU, "n_objects": self.n_objects,
                "cancelled": self.cancelled}

    def to_json(self, per_object: bool = False) -> str:
        """JSON text of :meth:`summary`, with the per-object scores on request."""
        data = self.summary()
        if per_object:
            data["objects"] = [asdict(o) for o in self.objects]
        return json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in data.items()}, indent=2)

    def table(self) -> str:
        """Plain-text table: one line per slice, then the totals."""
        lines = [f"{'slice':>6} {'objects':>8} {'mIoU':>7} {'mBIoU':>7}"]
        slices = sorted({o.slice_index for o in self.objects})
        for z in slices:
            sub = [o for o in self.objects if o.slice_index == z]
            m, b = mean_scores([o.iou for o in sub], [o.boundary_iou for o in sub])
            lines.append(f"{z:>6} {len(sub):>8} {m:>7.4f} {b:>7.4f}")
        lines.append(f"{'all':>6} {self.n_objects:>8} {self.mIoU:>7.4f} {self.mBIoU:>7.4f}")
        return "\n".join(lines)


def predict_box_masks(predictor: HQSamPredictor, boxes: np.ndarray,
                      batch_size: int = 16) -> np.ndarray:
    """HQ masks for boxes on the predictor's current image.

    Parameters
    ----------
    predictor : HQSamPredictor
        With an image (or embedding) set.
    boxes : np.ndarray
        (N, 4) XYXY boxes in pixels of the original image.
    batch_size : int
        Prompts per decoder call.

    Returns
    -------
    np.ndarray
        (N, H, W) bool masks: HQ logits only, single-mask output, thresholded at 0.
    """
    _check_batch_size(batch_size)
    out = []
    for start in range(0, len(boxes), batch_size):
        chunk = torch.as_tensor(boxes[start:start + batch_size], dtype=torch.float,
                                device=predictor.device)
        chunk = predictor.transform.apply_boxes_torch(chunk, predictor.original_size)
        masks, _, _ = predictor.predict_torch(None, None, boxes=chunk, multimask_output=False,
                                              hq_token_only=True)
        out.append(masks[:, 0].cpu().numpy())
    h, w = predictor.original_size
    return np.concatenate(out) if out else np.zeros((0, h, w), dtype=bool)


def score_slice(predictor: HQSamPredictor, labels: np.ndarray, slice_index: int = 0,
                label_ids: Sequence[int] | None = None, batch_size: int = 16,
                prompt_boxes: dict | None = None) -> list[ObjectScore]:
    """Score the objects of one slice whose image is set on ``predictor``.

    Parameters
    ----------
    predictor : HQSamPredictor
        With the slice's image (or embedding) set.
    labels : np.ndarray
        (H, W) ground-truth instance labels.
    slice_index : int
        Recorded in the scores.
    label_ids : sequence of int, optional
        Only these objects (default: all).
    prompt_boxes : dict, optional
        ``{label id: (4,) XYXY}`` box prompts replacing the tight boxes of those objects.
    """
    objects = object_boxes(labels, prompt_boxes)
    if label_ids is not None:
        keep = set(int(i) for i in label_ids)
        objects = [(i, b) for i, b in objects if i in keep]
    if not objects:
        return []
    d = boundary_width(labels.shape)
    masks = predict_box_masks(predictor, np.stack([b for _, b in objects]), batch_size)
    scores = []
    for (label, _), pred in zip(objects, masks):
        iou, biou = object_scores(labels == label, pred, d)
        scores.append(ObjectScore(slice_index, label, iou, biou))
    return scores


def evaluate(model, image: np.ndarray, labels: np.ndarray, *, batch_size: int = 16,
             progress: Callable[[int, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> EvaluationResult:
    """Score a model on an image (or stack) with ground-truth instance labels.

    Parameters
    ----------
    model : HQSam
        The model (with an adapter loaded, if any).
    image : np.ndarray
        (H, W), (H, W, 3), (Z, H, W) or (Z, H, W, 3).
    labels : np.ndarray
        (H, W) or (Z, H, W) integer labels, 0 = background.
    batch_size : int
        Box prompts per decoder call.
    progress : callable, optional
        ``progress(done_slices, total_slices)`` after each slice.
    should_stop : callable, optional
        Polled before each slice; True ends the run (``cancelled`` is then set).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InputError
        Labels that do not fit the image, are not whole non-negative ids or hold no
        object (scores would be undefined); a batch size below 1.
    """
    _check_batch_size(batch_size)
    labels = check_labels(labels, image, require_objects=True)
    predictor = HQSamPredictor(model)
    total = 1 if labels.ndim == 2 else labels.shape[0]
    scores: list[ObjectScore] = []
    for done, item in enumerate(iter_slices(image, labels)):
        if should_stop is not None and should_stop():
            return EvaluationResult.from_objects(scores, cancelled=True)
        if item.labels.any():
            predictor.set_image(item.rgb)
            scores += score_slice(predictor, item.labels, item.index, batch_size=batch_size)
        if progress is not None:
            progress(done + 1, total)
    return EvaluationResult.from_objects(scores)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
