"""Score HQ-SAM against ground-truth labels the way HQ-SAM is evaluated.

For every ground-truth object of every slice: its tight box as the only prompt,
single-mask output, the HQ mask alone (``hq_token_only=True``) upsampled to the
image size and thresholded at 0, then mask IoU and boundary IoU
(:mod:`napari_hq_sam.metrics`).

Instance outputs (``hqsam auto``, ``hqsam refine``, any labels image) are scored by
:func:`evaluate_labels`: mSA and F1 at IoU 0.5 (:mod:`napari_hq_sam.metrics`), and mIoU
and mBIoU of each ground-truth object against the predicted object it overlaps most.
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
from .metrics import (
    IOU_THRESHOLDS,
    boundary_width,
    f1_score,
    iou_matrix,
    mean_scores,
    object_scores,
    segmentation_accuracy,
    true_positives,
)
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


# -- instance outputs --------------------------------------------------------------------------

@dataclass
class SliceInstances:
    """Instance metrics of one 2D slice.

    Attributes
    ----------
    slice_index : int
    n_true, n_pred : int
        Ground-truth and predicted objects on the slice.
    accuracies : list of float
        Segmentation accuracy at each of :data:`~napari_hq_sam.metrics.IOU_THRESHOLDS`.
    f1 : float
        F1 at IoU 0.5.
    """

    slice_index: int
    n_true: int
    n_pred: int
    accuracies: list
    f1: float

    @property
    def msa(self) -> float:
        """Mean of :attr:`accuracies`."""
        return float(np.mean(self.accuracies))


@dataclass
class InstanceEvaluation:
    """Outcome of :func:`evaluate_labels`.

    Attributes
    ----------
    mSA : float
        Mean segmentation accuracy over IoU 0.50:0.05:0.95, averaged over the slices
        holding objects (ground truth or predicted), as micro-sam averages over images.
    F1 : float
        F1 at IoU 0.5, averaged over the same slices.
    mIoU, mBIoU : float
        Mean over ground-truth objects of mask IoU and boundary IoU with the predicted
        object each overlaps most (0 for an object no prediction touches).
    n_objects, n_predicted : int
        Ground-truth and predicted objects, counted per slice.
    slices : list of SliceInstances
    objects : list of ObjectScore
        Per ground-truth object: its best-overlap IoU and boundary IoU.
    """

    mSA: float
    F1: float
    mIoU: float
    mBIoU: float
    n_objects: int
    n_predicted: int
    slices: list = field(default_factory=list)
    objects: list = field(default_factory=list)

    def summary(self) -> dict:
        """``{"mSA", "F1", "mIoU", "mBIoU", "n_objects", "n_predicted"}``."""
        return {"mSA": self.mSA, "F1": self.F1, "mIoU": self.mIoU, "mBIoU": self.mBIoU,
                "n_objects": self.n_objects, "n_predicted": self.n_predicted}

    def to_json(self, per_object: bool = False) -> str:
        """JSON text of :meth:`summary` (and SA per threshold), per-object scores on request."""
        data = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in self.summary().items()}
        data["iou_thresholds"] = list(IOU_THRESHOLDS)
        data["slices"] = [{"slice_index": s.slice_index, "n_objects": s.n_true,
                           "n_predicted": s.n_pred, "mSA": s.msa, "F1": s.f1,
                           "accuracies": s.accuracies} for s in self.slices]
        if per_object:
            data["objects"] = [asdict(o) for o in self.objects]
        return json.dumps(data, indent=2)

    def table(self) -> str:
        """Plain-text table: one line per slice, then the totals."""
        head = (f"{'slice':>6} {'objects':>8} {'predicted':>9} {'mSA':>7} {'F1@0.5':>7} "
                f"{'mIoU':>7} {'mBIoU':>7}")
        lines = [head]
        for s in self.slices:
            sub = [o for o in self.objects if o.slice_index == s.slice_index]
            m, b = mean_scores([o.iou for o in sub], [o.boundary_iou for o in sub])
            lines.append(f"{s.slice_index:>6} {s.n_true:>8} {s.n_pred:>9} {s.msa:>7.4f} "
                         f"{s.f1:>7.4f} {m:>7.4f} {b:>7.4f}")
        lines.append(f"{'all':>6} {self.n_objects:>8} {self.n_predicted:>9} {self.mSA:>7.4f} "
                     f"{self.F1:>7.4f} {self.mIoU:>7.4f} {self.mBIoU:>7.4f}")
        return "\n".join(lines)


def score_instances(gt: np.ndarray, pred: np.ndarray, slice_index: int = 0
                    ) -> tuple[SliceInstances, list[ObjectScore]]:
    """Instance metrics of one 2D slice and each ground-truth object's best-overlap scores.

    Parameters
    ----------
    gt, pred : np.ndarray
        ``(H, W)`` integer labels, 0 = background.
    slice_index : int
        Recorded in the scores.
    """
    gt_ids, pred_ids, iou = iou_matrix(gt, pred)
    counts = []
    for t in IOU_THRESHOLDS:
        tp = true_positives(iou, t)
        counts.append((tp, pred_ids.size - tp, gt_ids.size - tp))
    tp50 = true_positives(iou, 0.5)
    f1 = f1_score(tp50, pred_ids.size - tp50, gt_ids.size - tp50)
    sliced = SliceInstances(slice_index, int(gt_ids.size), int(pred_ids.size),
                            [segmentation_accuracy(*c) for c in counts], f1)
    d = boundary_width(gt.shape)
    objects = []
    for row, label in enumerate(gt_ids.tolist()):
        if pred_ids.size and iou[row].max() > 0:
            best = int(pred_ids[int(np.argmax(iou[row]))])
            _, biou = object_scores(gt == label, pred == best, d)
            objects.append(ObjectScore(slice_index, int(label), float(iou[row].max()), biou))
        else:
            objects.append(ObjectScore(slice_index, int(label), 0.0, 0.0))
    return sliced, objects


def evaluate_labels(labels: np.ndarray, predicted: np.ndarray) -> InstanceEvaluation:
    """Score an instance segmentation (a labels image) against ground-truth labels.

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` or ``(Z, H, W)`` ground-truth instance labels, 0 = background.
    predicted : np.ndarray
        Labels of the same shape (e.g. ``hqsam auto`` or ``hqsam refine`` output). Ids
        need not match the ground truth's; objects are matched by IoU per slice.

    Returns
    -------
    InstanceEvaluation

    Raises
    ------
    InputError
        Labels that are not whole non-negative ids, differ in shape, or (ground truth)
        hold no object.
    """
    labels = check_labels(labels, require_objects=True, name="ground-truth labels")
    predicted = check_labels(predicted, labels, name="predicted labels",
                             image_name="the ground-truth labels")
    pairs = [(labels, predicted)] if labels.ndim == 2 else list(zip(labels, predicted))
    slices, objects = [], []
    for z, (gt, pred) in enumerate(pairs):
        if not (gt.any() or pred.any()):
            continue
        sliced, scored = score_instances(gt, pred, z)
        slices.append(sliced)
        objects += scored
    miou, mbiou = mean_scores([o.iou for o in objects], [o.boundary_iou for o in objects])
    return InstanceEvaluation(
        float(np.mean([s.msa for s in slices])), float(np.mean([s.f1 for s in slices])),
        miou, mbiou, sum(s.n_true for s in slices), sum(s.n_pred for s in slices), slices,
        objects)
