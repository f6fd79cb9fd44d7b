"""The training loop of the HQ branch: frozen SAM, cached features, best step kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from ..adapters import hq_state_dict
from ..errors import InputError
from ..evaluation import EvaluationResult, score_slice
from ..model import HQSam
from ..predictor import HQSamPredictor, ImageEmbedding
from .config import TrainingConfig
from .data import (
    EncodedImage,
    collect_slices,
    encode_training_images,
    split_objects,
    target_masks,
)
from .loss import bce_dice_loss
from .prompts import boxes_from_masks, noisy_mask_logits, sample_points


@dataclass
class TrainingUpdate:
    """What a ``progress`` callable receives.

    ``phase`` is ``"encode"`` (``step`` counts encoder passes) or ``"train"``;
    ``val`` holds ``{"mIoU", "mBIoU"}`` on the held-out objects when validated.
    """

    phase: str
    step: int
    total: int
    loss: float | None = None
    val: dict | None = None
    best_step: int | None = None


@dataclass
class TrainingResult:
    """Outcome of :func:`train_hq`; the model holds the HQ weights of ``best_step``."""

    config: TrainingConfig
    steps_done: int
    best_step: int
    best_metrics: dict
    initial_metrics: dict
    n_train_objects: int
    n_val_objects: int
    seconds_per_step: float
    cancelled: bool = False
    history: list[dict] = field(default_factory=list)


def train_hq(model: HQSam, data: Sequence[tuple[np.ndarray, np.ndarray]],
             config: TrainingConfig | None = None, *,
             progress: Callable[[TrainingUpdate], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> TrainingResult:
    """Train the HQ branch of ``model`` in place on images with instance labels.

    Parameters
    ----------
    model : HQSam
        Model on its device; only its HQ modules change.
    data : sequence of (image, labels)
        Images (H, W), (H, W, 3), (Z, H, W) or (Z, H, W, 3) with matching integer
        labels (H, W) or (Z, H, W), 0 = background.
    config : TrainingConfig, optional
        Settings (defaults: :class:`TrainingConfig`).
    progress : callable, optional
        Called with a :class:`TrainingUpdate` after each encoder pass and each step.
    should_stop : callable, optional
        Polled before each pass and step; True stops the run, keeping the best step so far.

    Returns
    -------
    TrainingResult

    Raises
    ------
    InputError
        Labels that do not fit their image, are not whole non-negative ids, or hold
        no object (checked before any model work); a loss that became NaN or
        infinite (the model then holds the best finite step).
    """
    config = config or TrainingConfig()
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    slices = collect_slices(data)
    train_set, val_set = split_objects(slices, config.val_fraction, config.max_val_objects, rng)
    stop = should_stop or (lambda: False)
    notify = progress or (lambda update: None)
    images = encode_training_images(model, slices, config.flip,
                                    lambda d, t: notify(TrainingUpdate("encode", d, t)), stop)
    if stop():
        return TrainingResult(config, 0, 0, {}, {}, len(train_set), len(val_set),
                              float("nan"), cancelled=True)
    pools = _object_pools(images, train_set)
    weights = np.array([len(objects) for objects in pools], dtype=float)
    originals = [img for img in images if not img.flipped]

    decoder = model.mask_decoder
    params = list(decoder.hq_parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [max(1, int(config.steps * config.lr_drop_at))], gamma=0.1)

    initial = validate(model, originals, val_set, slices)
    best_step, best, best_state = 0, initial, hq_state_dict(model)
    history = [{"step": 0, **initial}]
    notify(TrainingUpdate("train", 0, config.steps, val=initial, best_step=0))
    step, started, cancelled = 0, time.perf_counter(), False
    try:
        for step in range(1, config.steps + 1):
            if stop():
                cancelled, step = True, step - 1
                break
            objects = pools[rng.choice(len(pools), p=weights / weights.sum())]
            chosen = rng.choice(len(objects), size=min(config.batch_size, len(objects)),
                                replace=False)
            loss = train_step(model, [objects[j] for j in chosen], config, rng, gen)
            if not bool(torch.isfinite(loss)):
                # an update from it would make every HQ weight NaN: keep the best finite state
                model.load_state_dict(best_state, strict=False)
                raise InputError(f"training diverged at step {step} (the loss is "
                                 f"{float(loss.detach())}): train again with a lower learning rate "
                                 f"than {config.lr:g}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            record = {"step": step, "loss": float(loss.detach())}
            val = None
            if val_set and (step % config.eval_every == 0 or step == config.steps):
                val = validate(model, originals, val_set, slices)
                record.update(val)
                if val["mIoU"] > best["mIoU"]:
                    best_step, best, best_state = step, val, hq_state_dict(model)
            history.append(record)
            notify(TrainingUpdate("train", step, config.steps, record["loss"], val, best_step))
    finally:
        for p in params:
            p.requires_grad_(False)
    elapsed = time.perf_counter() - started
    if val_set:
        model.load_state_dict(best_state, strict=False)
    else:
        best_step = step
    return TrainingResult(config, step, best_step, best, initial, len(train_set), len(val_set),
                          elapsed / max(step, 1), cancelled, history)


def _object_pools(images: Sequence[EncodedImage], train_set: set,
                  ) -> list[list[tuple[EncodedImage, int]]]:
    """Training objects grouped by image: one pool per distinct encoder output.

    Label sets given on the same image (and flip) share one pool, so that a step's
    batch can mix them.
    """
    pools: dict[int, list] = {}
    for img in images:
        ids = sorted(k for i, k in train_set if i == img.source)
        pools.setdefault(id(img.embeddings), []).extend((img, k) for k in ids)
    return [objects for objects in pools.values() if objects]


def train_step(model: HQSam, objects: Sequence[tuple[EncodedImage, int]],
               config: TrainingConfig, rng: np.random.Generator,
               gen: torch.Generator) -> torch.Tensor:
    """Loss of one step on objects of one image, one prompt kind each.

    Parameters
    ----------
    objects : sequence of (EncodedImage, int)
        ``(image, label id)`` pairs whose images share one encoder output.

    Returns
    -------
    torch.Tensor
        Scalar (BCE + Dice) / number of masks, differentiable in the HQ parameters.
    """
    img = objects[0][0]
    device = img.embeddings.device
    masks = torch.as_tensor(np.stack([o.labels == k for o, k in objects]), device=device)
    targets = target_masks(masks, img.input_size)
    hq_features = model.mask_decoder.compute_hq_features(img.embeddings, img.early)
    boxes = boxes_from_masks(masks)
    for j, (o, k) in enumerate(objects):
        if o.prompt_boxes is not None and int(k) in o.prompt_boxes:
            boxes[j] = torch.as_tensor(o.prompt_boxes[int(k)], device=device)
    kinds = rng.choice(len(config.prompt_kinds), size=len(objects))
    bce = dice = 0.0
    for k in np.unique(kinds):
        sel = torch.as_tensor(np.flatnonzero(kinds == k), device=device)
        logits = _decode(model, img, hq_features, config.prompt_kinds[k], masks[sel],
                         targets[sel], boxes[sel], config, gen)
        b, d = bce_dice_loss(logits, targets[sel], config.loss_points, config.oversample_ratio,
                             config.importance_ratio, gen)
        bce, dice = bce + b, dice + d
    return (bce + dice) / len(objects)


def _decode(model, img: EncodedImage, hq_features, kind, masks, targets, prompt_boxes, config,
            gen) -> torch.Tensor:
    """HQ logits (B, 1, 256, 256) for B objects prompted with one kind of prompt.

    ``masks`` (B, H, W) bool, ``targets`` (B, 1, 1024, 1024), ``prompt_boxes`` (B, 4) XYXY.
    """
    transform = ResizeLongestSide(model.image_encoder.img_size)
    points = boxes = mask_input = None
    with torch.no_grad():
        if kind == "box":
            boxes = transform.apply_boxes_torch(prompt_boxes, img.original_size)
        elif kind == "points":
            coords = transform.apply_coords_torch(sample_points(masks, config.n_points, gen),
                                                  img.original_size)
            points = (coords, torch.ones(coords.shape[:2], dtype=torch.int, device=coords.device))
        else:
            mask_input = noisy_mask_logits(targets, gen, config.mask_noise_scale,
                                           config.mask_prompt_logit)
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    logits, _ = model.mask_decoder(
        image_embeddings=img.embeddings, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=False, hq_token_only=True, hq_features=hq_features)
    return logits


@torch.no_grad()
def validate(model: HQSam, originals: Sequence[EncodedImage], val_set: set,
             slices) -> dict:
    """mIoU and mBIoU of the held-out objects (box prompt, HQ mask, as in evaluation)."""
    if not val_set:
        return {"mIoU": float("nan"), "mBIoU": float("nan")}
    predictor = HQSamPredictor(model)
    scores, fused = [], {}  # images shared by several label sets are fused once
    for img in originals:
        ids = [k for i, k in val_set if i == img.source]
        if not ids:
            continue
        if id(img.embeddings) not in fused:
            fused[id(img.embeddings)] = model.mask_decoder.compute_hq_features(
                img.embeddings, img.early)
        hq = fused[id(img.embeddings)]
        predictor.set_image_embedding(
            ImageEmbedding(img.embeddings, hq, img.original_size, img.input_size))
        scores += score_slice(predictor, img.labels, slices[img.source].index, ids,
                              prompt_boxes=img.prompt_boxes)
    result = EvaluationResult.from_objects(scores)
    return {"mIoU": result.mIoU, "mBIoU": result.mBIoU}
