"""Unit tests of automatic segmentation on hand-made masks with known answers (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import MaskData, rle_to_mask
from segment_anything.utils.transforms import ResizeLongestSide

from napari_hq_sam.automatic import (
    AutoMaskConfig,
    AutomaticMaskGenerator,
    box_nms,
    filter_candidates,
)
from napari_hq_sam.engine.labels import (
    masks_to_labels,
    match_by_iou,
    relabel_consecutive,
    remove_small_regions,
    stitch_slices,
)
from napari_hq_sam.errors import Cancelled

H = W = 64


def disc(cy, cx, r, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def square(y0, x0, y1, x1, shape=(H, W)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# -- filtering ------------------------------------------------------------------------------
def test_filter_candidates_by_iou_stability_and_crop_edge():
    a = square(10, 10, 30, 30)
    logits = torch.stack([
        torch.where(torch.as_tensor(a), 5.0, -5.0),          # good: kept
        torch.where(torch.as_tensor(a), 5.0, -5.0),          # low predicted IoU: dropped
        torch.where(torch.as_tensor(a), 0.5, -0.5),          # unstable: dropped
        torch.full((H, W), -5.0),                            # empty: dropped
    ])
    data = MaskData(masks=logits, iou_preds=torch.tensor([0.95, 0.5, 0.99, 0.99]),
                    points=torch.tensor([[20.0, 20.0]] * 4))
    cfg = AutoMaskConfig(pred_iou_thresh=0.88, stability_score_thresh=0.95)
    out = filter_candidates(data, cfg, 0.0, [0, 0, W, H], (H, W))
    assert len(out["rles"]) == 1
    assert np.array_equal(rle_to_mask(out["rles"][0]), a)
    assert out["boxes"].tolist() == [[10, 10, 29, 29]]
    assert out["stability_score"].tolist() == [1.0]
    assert out["iou_preds"].tolist() == pytest.approx([0.95])


def test_filter_stability_score_value():
    # logits 2 on a 10x10 core, 0.5 on a ring around it (12x12): above +1 -> 100 px,
    # above -1 -> 144 px, stability = 100/144
    logits = torch.full((1, H, W), -5.0)
    logits[0, 20:32, 20:32] = 0.5
    logits[0, 21:31, 21:31] = 2.0
    data = MaskData(masks=logits, iou_preds=torch.tensor([0.9]),
                    points=torch.tensor([[25.0, 25.0]]))
    cfg = AutoMaskConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    out = filter_candidates(data, cfg, 0.0, [0, 0, W, H], (H, W))
    assert out["stability_score"].item() == pytest.approx(100 / 144)
    cfg = AutoMaskConfig(pred_iou_thresh=0.0, stability_score_thresh=0.7)
    data = MaskData(masks=logits, iou_preds=torch.tensor([0.9]),
                    points=torch.tensor([[25.0, 25.0]]))
    assert len(filter_candidates(data, cfg, 0.0, [0, 0, W, H], (H, W))["rles"]) == 0


def test_filter_drops_masks_cut_by_an_inner_crop_edge():
    # crop [0, 0, 32, 32] of a 64x64 image: a mask reaching the crop's right edge
    # (x = 31, inside the image) is cut by the crop and dropped; one at the
    # image's top-left corner is kept.
    inner = torch.where(torch.as_tensor(square(10, 12, 20, 32, (32, 32))), 5.0, -5.0)
    corner = torch.where(torch.as_tensor(square(0, 0, 8, 8, (32, 32))), 5.0, -5.0)
    data = MaskData(masks=torch.stack([inner, corner]), iou_preds=torch.tensor([0.9, 0.9]),
                    points=torch.zeros(2, 2))
    cfg = AutoMaskConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    out = filter_candidates(data, cfg, 0.0, [0, 0, 32, 32], (H, W))
    assert len(out["rles"]) == 1
    assert np.array_equal(rle_to_mask(out["rles"][0]), square(0, 0, 8, 8))


# -- NMS ------------------------------------------------------------------------------------
def test_box_nms_keeps_best_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 20]])
    scores = torch.tensor([0.8, 0.9, 0.5, 0.7])
    # box 1 suppresses box 0 (IoU 0.81); box 3 overlaps box 1 by IoU 81/200 < 0.7: kept
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 3, 2]
    assert box_nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.7).tolist() == []


# -- the whole generator with a stand-in predictor ------------------------------------------
class FakePredictor:
    """Answers a point with the hand-made object under it (or the background)."""

    def __init__(self, objects):
        self.objects = objects          # list of (mask, predicted iou, logit amplitude)
        self.transform = ResizeLongestSide(1024)
        self.device = torch.device("cpu")
        self.model = type("M", (), {"mask_threshold": 0.0})()
        self.calls = 0

    def set_image(self, image):
        self.size = image.shape[:2]

    def set_image_embedding(self, embedding):
        self.size = tuple(embedding.original_size)

    def predict_torch(self, coords, labels, multimask_output=True, return_logits=False,
                      hq_token_only=False):
        self.calls += 1
        pts = coords[:, 0].numpy() * max(self.size) / 1024   # back to pixels (X, Y)
        logits, ious = [], []
        for x, y in pts:
            mask, iou, amp = next(((m, i, a) for m, i, a in self.objects
                                   if m[int(y), int(x)]), (None, 0.3, 5.0))
            mask = np.ones(self.size, bool) if mask is None else mask
            logits.append(torch.where(torch.as_tensor(mask), amp, -amp))
            ious.append(iou)
        return torch.stack(logits)[:, None], torch.tensor(ious)[:, None], None


def two_objects():
    a, b = disc(20, 20, 10), square(36, 36, 60, 60)
    wobbly = square(0, 40, 12, 60)
    return a, b, [(a, 0.95, 5.0), (b, 0.92, 5.0), (wobbly, 0.99, 0.5)]


def test_generator_finds_the_hand_made_objects():
    a, b, objects = two_objects()
    image = np.zeros((H, W, 3), np.uint8)
    cfg = AutoMaskConfig(points_per_side=16, points_per_batch=50)
    predictor = FakePredictor(objects)
    masks = AutomaticMaskGenerator(predictor, cfg).generate(image)
    # many grid points hit a and b; NMS leaves one of each; background (low IoU)
    # and the wobbly object (unstable) are filtered out
    assert len(masks) == 2
    assert predictor.calls == 6                       # ceil(256 / 50) batches
    assert masks.predicted_iou.tolist() == pytest.approx([0.95, 0.92])
    labels = masks.to_labels()
    assert labels.dtype == np.uint32
    assert np.array_equal(labels == 1, a) and np.array_equal(labels == 2, b)


def test_generator_progress_and_cancel():
    _, _, objects = two_objects()
    image = np.zeros((H, W, 3), np.uint8)
    cfg = AutoMaskConfig(points_per_side=8, points_per_batch=16)
    gen = AutomaticMaskGenerator(FakePredictor(objects), cfg)
    seen = []
    gen.generate(image, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(Cancelled):
        gen.generate(image, should_stop=lambda: len(seen) >= 6,
                     progress=lambda d, t: seen.append((d, t)))
    assert len(seen) == 6


def test_generator_min_region_area_cleans_holes_and_islands():
    holed = square(8, 8, 40, 40)
    holed[20:23, 20:23] = False                       # 9-pixel hole
    holed[50:52, 50:52] = True                        # 4-pixel island
    cfg = AutoMaskConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                         min_mask_region_area=10)
    masks = AutomaticMaskGenerator(FakePredictor([(holed, 0.9, 5.0)]), cfg).generate(
        np.zeros((H, W, 3), np.uint8))
    cleaned = [masks.mask(i) for i in range(len(masks))]
    assert any(np.array_equal(m, square(8, 8, 40, 40)) for m in cleaned)


class CropAwarePredictor(FakePredictor):
    """Knows where a crop lies: pixel (y, x) of the image holds (y, x, 0)."""

    def set_image(self, image):
        self.size = image.shape[:2]
        self.offset = (int(image[0, 0, 0]), int(image[0, 0, 1]))

    def predict_torch(self, coords, labels, multimask_output=True, return_logits=False,
                      hq_token_only=False):
        oy, ox = self.offset
        h, w = self.size
        shifted = [(m[oy:oy + h, ox:ox + w], i, a) for m, i, a in self.objects]
        whole, self.objects = self.objects, shifted
        try:
            return super().predict_torch(coords, labels, multimask_output, return_logits,
                                         hq_token_only)
        finally:
            self.objects = whole


def test_crop_layers_find_objects_once_preferring_small_crops():
    n = 240
    yy, xx = np.mgrid[:n, :n]
    image = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)
    a, b = disc(50, 50, 10, (n, n)), disc(195, 135, 10, (n, n))
    predictor = CropAwarePredictor([(a, 0.95, 5.0), (b, 0.93, 5.0)])
    cfg = AutoMaskConfig(points_per_side=8, crop_n_layers=1)
    gen = AutomaticMaskGenerator(predictor, cfg)
    assert gen.n_steps == 1 + 4
    masks = gen.generate(image)
    # each object is found in the whole image and in the crops that hold it;
    # NMS between crops keeps one mask per object, from a small crop
    assert len(masks) == 2
    found = sorted(range(2), key=lambda i: -masks.predicted_iou[i])
    assert np.array_equal(masks.mask(found[0]), a) and np.array_equal(masks.mask(found[1]), b)
    crop_areas = (masks.crop_boxes[:, 2] - masks.crop_boxes[:, 0]) * \
        (masks.crop_boxes[:, 3] - masks.crop_boxes[:, 1])
    assert (crop_areas < n * n).all()


# -- labels ---------------------------------------------------------------------------------
def test_masks_to_labels_higher_score_wins_and_ids_are_consecutive():
    a, b, c = square(0, 0, 20, 20), square(10, 10, 30, 30), square(12, 12, 18, 18)
    labels = masks_to_labels([a, b, c], [0.7, 0.9, 0.1], (H, W))
    assert labels.dtype == np.uint32
    # b (best) keeps all its pixels, a keeps the rest, c is hidden under b: dropped
    assert np.array_equal(labels == 1, b)
    assert np.array_equal(labels == 2, a & ~b)
    assert labels.max() == 2
    assert masks_to_labels([], [], (4, 5)).shape == (4, 5)


def test_relabel_consecutive():
    labels = np.array([[0, 7, 7], [3, 0, 12]])
    assert relabel_consecutive(labels).tolist() == [[0, 2, 2], [1, 0, 3]]


def test_remove_small_regions_holes_and_islands():
    m = square(5, 5, 25, 25)
    m[10:12, 10:12] = False                           # hole of 4
    m[40:42, 40:43] = True                            # island of 6
    filled, changed = remove_small_regions(m, 5, "holes")
    assert changed and filled[10:12, 10:12].all() and filled.sum() == m.sum() + 4
    cleaned, changed = remove_small_regions(filled, 7, "islands")
    assert changed and np.array_equal(cleaned, square(5, 5, 25, 25))
    same, changed = remove_small_regions(cleaned, 7, "islands")
    assert not changed and same is cleaned
    # every island small: the largest one stays
    tiny = square(0, 0, 2, 2) | square(10, 10, 12, 13)
    kept, _ = remove_small_regions(tiny, 100, "islands")
    assert np.array_equal(kept, square(10, 10, 12, 13))


# -- stitching ------------------------------------------------------------------------------
def test_match_by_iou_is_greedy_and_one_to_one():
    prev = np.zeros((H, W), int)
    prev[square(0, 0, 20, 20)] = 5
    cur = np.zeros((H, W), int)
    cur[square(0, 0, 20, 18)] = 1                     # IoU 0.9 with 5
    cur[square(0, 18, 20, 20)] = 2                    # IoU 0.1 with 5
    cur[square(40, 40, 50, 50)] = 3                   # no overlap
    assert match_by_iou(prev, cur, 0.05) == {1: 5}


def test_stitch_slices_follows_objects_through_z():
    z = np.zeros((4, H, W), np.uint32)
    # object A drifts right slowly in slices 0-3, object B appears in slice 2 only,
    # ids given per slice as an automatic run would (different each slice)
    for k in range(4):
        z[k][square(10, 10 + k, 30, 30 + k)] = 10 + k
    z[2][square(40, 40, 50, 50)] = 3
    z[3][square(40, 0, 50, 10)] = 1                   # far from B: a new object
    out = stitch_slices(z, 0.5)
    assert out.dtype == np.uint32
    assert [np.unique(out[k][square(10, 10 + k, 30, 30 + k)]).tolist() for k in range(4)] == \
        [[1], [1], [1], [1]]
    assert np.unique(out[2][square(40, 40, 50, 50)]).tolist() == [2]
    assert np.unique(out[3][square(40, 0, 50, 10)]).tolist() == [3]
    assert sorted(np.unique(out).tolist()) == [0, 1, 2, 3]
    # with a very strict threshold nothing is stitched: every slice's object is new
    assert stitch_slices(z, 0.99).max() == 6


def test_candidates_cat_appends_every_kind_of_entry_in_order():
    from napari_hq_sam.automatic_filters import Candidates

    data = Candidates()
    first = MaskData(rles=[{"counts": [3, 1]}], iou_preds=torch.tensor([0.9]),
                     points=np.array([[1.0, 2.0]]))
    second = MaskData(rles=[{"counts": [0, 4]}, {"counts": [2, 2]}],
                      iou_preds=torch.tensor([0.5, 0.7]), points=np.array([[3.0, 4.0], [5.0, 6.0]]))
    data.cat(first)
    data.cat(second)
    assert [r["counts"] for r in data["rles"]] == [[3, 1], [0, 4], [2, 2]]
    assert data["iou_preds"].tolist() == pytest.approx([0.9, 0.5, 0.7])
    assert data["points"].tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


@pytest.mark.parametrize("shape", [(5, 7), (64, 48)])
def test_rle_to_mask_equals_meta_on_ragged_and_plain_masks(shape):
    from segment_anything.utils.amg import mask_to_rle_pytorch

    from napari_hq_sam.automatic_filters import rle_to_mask as fast_rle_to_mask

    rng = np.random.default_rng(shape[0])
    masks = np.stack([rng.random(shape) > 0.5,            # ragged: a run per few pixels
                      disc(shape[0] // 2, shape[1] // 2, min(shape) // 3, shape),
                      np.ones(shape, bool),                # one run, no leading background
                      np.zeros(shape, bool)])
    masks[0, 0, 0] = True
    rles = mask_to_rle_pytorch(torch.as_tensor(masks))
    for mask, rle in zip(masks, rles, strict=True):
        fast = fast_rle_to_mask(rle)
        assert fast.shape == shape and fast.dtype == bool
        assert np.array_equal(fast, mask)
        assert np.array_equal(fast, rle_to_mask(rle))
