"""HQ-branch training: losses, prompts, only HQ tensors change, and the loop learns.

The learnability test cannot use pretrained weights (none reach the build
machines). A *teacher* shares the student's base weights (same random
official-format checkpoint) but has other HQ weights; its masks for the boxes of
real nuclei are the targets. Training the student's HQ branch must move its masks
clearly towards the teacher's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_hq_sam import build_hq_sam
from napari_hq_sam._groundtruth import iter_slices, object_boxes
from napari_hq_sam.engine.encoder import encode_slices
from napari_hq_sam.evaluation import predict_box_masks
from napari_hq_sam.metrics import mask_iou
from napari_hq_sam.model import HQ_MODULE_NAMES
from napari_hq_sam.predictor import HQSamPredictor, ImageEmbedding
from napari_hq_sam.testing import write_random_checkpoint
from napari_hq_sam.training import TrainingConfig, train_hq
from napari_hq_sam.training.data import EncodedImage, _flip_box, target_masks
from napari_hq_sam.training.loop import _decode
from napari_hq_sam.training.loss import bce_dice_loss, uncertain_points
from napari_hq_sam.training.prompts import boxes_from_masks, noisy_mask_logits, sample_points

HQ_PREFIXES = tuple(f"mask_decoder.{n}." for n in HQ_MODULE_NAMES)


# -- pieces ------------------------------------------------------------------------------------
def test_prompts_from_masks():
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 3:7, 10:15] = True
    masks[1, 0:20, 29] = True
    assert boxes_from_masks(masks).tolist() == [[10, 3, 14, 6], [29, 0, 29, 19]]
    points = sample_points(masks, 10, torch.Generator().manual_seed(0))
    assert points.shape == (2, 10, 2)
    xs, ys = points[0, :, 0].long(), points[0, :, 1].long()
    assert masks[0, ys, xs].all()  # (X, Y) order, every point on the object
    assert _flip_box([10, 3, 14, 6], 30).tolist() == [15, 3, 19, 6]


def test_noisy_mask_changes_only_the_boundary_region():
    target = torch.zeros(1, 1, 1024, 1024)
    target[..., 256:768, 256:768] = 1.0
    logits = noisy_mask_logits(target, torch.Generator().manual_seed(0))
    assert logits.shape == (1, 1, 256, 256)
    clean = torch.where(target[..., ::4, ::4] > 0.5, 10.0, -10.0)
    changed = (logits != clean)[0, 0].nonzero()
    assert len(changed) > 0
    # every change lies within a few low-res pixels of the square's edges (64 and 192)
    dist = torch.minimum((changed - 64).abs(), (changed - 192).abs()).min(dim=1).values
    assert dist.max() <= 8
    assert (logits[..., 100:150, 100:150] == 10).all() and (logits[..., :40, :40] == -10).all()


def test_uncertain_points_prefer_the_decision_boundary():
    x = torch.linspace(-10, 10, 256)
    logits = x.expand(1, 1, 256, 256).clone()  # boundary (logit 0) at the middle column
    pts = uncertain_points(logits, 400, oversample=3.0, importance=0.75,
                           generator=torch.Generator().manual_seed(0))
    assert pts.shape == (1, 400, 2)
    near = (pts[0, :300, 0] - 0.5).abs()
    assert near.max() < 0.3  # the 300 uncertain points: central band of the x axis
    assert (pts[0, 300:, 0] - 0.5).abs().max() > 0.3  # the 100 random ones spread out


def test_bce_dice_loss_values():
    gen = torch.Generator().manual_seed(0)
    # Constant logit 2 against an all-foreground target: every sampled point has
    # BCE softplus(-2) and probability sigmoid(2), whichever points are drawn.
    logits, target = torch.full((2, 1, 32, 32), 2.0), torch.ones(2, 1, 64, 64)
    bce, dice = bce_dice_loss(logits, target, 256, 3.0, 0.75, gen)
    p = torch.sigmoid(torch.tensor(2.0)).item()
    assert bce.item() == pytest.approx(2 * np.log1p(np.exp(-2.0)), rel=1e-5)
    assert dice.item() == pytest.approx(2 * (1 - (2 * 256 * p + 1) / (256 * p + 256 + 1)),
                                        rel=1e-5)
    # right vs wrong confident predictions of a square
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 16:48, 16:48] = 1.0
    good = (target * 2 - 1) * 20
    right = sum(bce_dice_loss(good, target, 256, 3.0, 0.75, gen)).item()
    wrong = sum(bce_dice_loss(-good, target, 256, 3.0, 0.75, gen)).item()
    assert wrong > 10 * right and wrong > 2 * (5 + 0.9)


def test_target_masks_in_padded_frame():
    masks = torch.zeros(1, 100, 50, dtype=torch.bool)
    masks[0, :, :25] = True
    t = target_masks(masks, (1024, 512))
    assert t.shape == (1, 1, 1024, 1024)
    assert t[0, 0, :, :250].min() == 1 and t[0, 0, :, 266:].max() == 0


# -- the loop ----------------------------------------------------------------------------------
def test_only_hq_parameters_change_and_cancel(tiny_model, nuclei2d, nuclei2d_labels):
    model = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    updates, steps = [], []

    def progress(update):
        updates.append(update)
        if update.phase == "train":
            steps.append(update.step)

    config = TrainingConfig(steps=10, batch_size=2, flip=False, val_fraction=0.0, seed=1)
    result = train_hq(model, [(nuclei2d[:96, :96], nuclei2d_labels[:96, :96])], config,
                      progress=progress, should_stop=lambda: len(steps) >= 3)
    assert result.cancelled and result.steps_done == 2 and steps == [0, 1, 2]
    assert [u.step for u in updates if u.phase == "encode"] == [1]
    assert all(np.isfinite(h["loss"]) for h in result.history[1:])
    after = model.state_dict()
    for key, value in after.items():
        if key.startswith(HQ_PREFIXES):
            assert not torch.equal(value, before[key]), f"{key} did not train"
        else:
            assert torch.equal(value, before[key]), f"{key} changed but is frozen"
    assert not any(p.requires_grad for p in model.parameters())


def test_rejects_labels_without_objects(tiny_model, nuclei2d):
    with pytest.raises(ValueError, match="no objects"):
        train_hq(tiny_model, [(nuclei2d[:64, :64], np.zeros((64, 64), np.uint16))])


@pytest.fixture(scope="module")
def seeded_tiny_model(tmp_path_factory):
    """vit_tiny with base weights fixed by a seed (the shared fixture's vary per session)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        path = write_random_checkpoint(tmp_path_factory.mktemp("seeded") / "tiny.pth",
                                       "vit_tiny", seed=1)
    return build_hq_sam("vit_tiny", path)


def test_student_learns_the_teachers_masks(seeded_tiny_model, nuclei2d, nuclei2d_labels):
    student = copy.deepcopy(seeded_tiny_model)
    teacher = copy.deepcopy(seeded_tiny_model)
    # The whole image: the teacher's random-weight masks are fine textures, which a
    # small crop (shrunk more on the way back from the 1024 frame) would alias.
    image, labels = nuclei2d, nuclei2d_labels
    rgb = next(iter_slices(image, labels)).rgb
    boxes = np.stack([b for _, b in object_boxes(labels)])[::5]  # 25 of the 125 nuclei
    raw = encode_slices(teacher, [rgb], fuse=False)[0]
    emb, early, input_size = raw.embeddings, raw.early, raw.input_size
    _shift_teacher(teacher, emb, early, boxes, input_size, labels.shape, logit=0.4)

    def masks_of(model):
        predictor = HQSamPredictor(model)
        with torch.no_grad():
            hq = model.mask_decoder.compute_hq_features(emb, early)
        predictor.set_image_embedding(ImageEmbedding(emb, hq, labels.shape, input_size))
        return predict_box_masks(predictor, boxes)

    targets = masks_of(teacher)
    fractions = targets.mean(axis=(1, 2))
    assert 0.05 < fractions.mean() < 0.9 and (fractions > 0).mean() > 0.8  # not empty, not full

    # Targets are aligned with the decoder's logits: the teacher's own low-res logits,
    # upsampled to the 1024 frame, agree with the targets built from its masks.
    img = EncodedImage(emb, early, targets[0].astype(np.uint8), labels.shape, input_size, 0,
                       False, {1: boxes[0]})
    masks = torch.as_tensor(targets[:4])
    frame = target_masks(masks, input_size)
    with torch.no_grad():
        hq = teacher.mask_decoder.compute_hq_features(emb, early)
        logits = _decode(teacher, img, hq, "box", masks, frame, torch.as_tensor(boxes[:4]),
                         TrainingConfig(), torch.Generator())
    up = torch.nn.functional.interpolate(logits, (1024, 1024), mode="bilinear") > 0
    agree = (up == (frame > 0.5)).float().mean()
    assert agree > 0.85 and agree > (up == (frame > 0.5).flip(-1)).float().mean() + 0.1

    # one label set per object so that the teacher's overlapping masks keep their boxes
    data = [(image, t.astype(np.uint8), {1: b}) for t, b in zip(targets, boxes)]
    iou_before = np.mean([mask_iou(t, s) for t, s in zip(targets, masks_of(student))])
    config = TrainingConfig(steps=8, batch_size=3, flip=False, prompt_kinds=("box",),
                            val_fraction=0.25, eval_every=8, seed=0)
    result = train_hq(student, data, config)
    iou_after = np.mean([mask_iou(t, s) for t, s in zip(targets, masks_of(student))])
    assert result.best_step == 8
    assert iou_after > iou_before + 0.08
    assert result.best_metrics["mIoU"] > result.initial_metrics["mIoU"]
    assert 1 - iou_after < 0.6 * (1 - iou_before)  # the disagreement shrinks by 40 % or more


def _shift_teacher(teacher, emb, early, boxes, input_size, image_size, logit: float) -> None:
    """Change the teacher's HQ weights so that its HQ logits rise by about ``logit``.

    The last bias of ``embedding_maskfeature`` (32 channels) is moved along the mean
    HQ hypernetwork vector h of the boxes, adding h·δ ≈ ``logit`` to every pixel: the
    teacher's masks are the student's grown, something the HQ branch can represent.
    """
    seen = []
    hook = teacher.mask_decoder.hf_mlp.register_forward_hook(lambda m, i, o: seen.append(o))
    predictor = HQSamPredictor(teacher)
    with torch.no_grad():
        hq = teacher.mask_decoder.compute_hq_features(emb, early)
        predictor.set_image_embedding(ImageEmbedding(emb, hq, image_size, input_size))
        predict_box_masks(predictor, boxes)
        hook.remove()
        h = torch.cat(seen).mean(0)
        teacher.mask_decoder.embedding_maskfeature[3].bias += logit * h / h.dot(h)
