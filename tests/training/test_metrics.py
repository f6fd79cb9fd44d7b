"""Mask IoU and boundary IoU on small masks computed by hand (HQSAM.md definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_hq_sam.metrics import (
    boundary_iou,
    boundary_width,
    mask_boundary,
    mask_iou,
    mean_scores,
)


def _box_mask(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


@pytest.mark.parametrize(("shape", "d"), [
    ((10, 10), 1),     # 0.02 * 14.14 = 0.28 -> round 0 -> max(1, 0)
    ((1, 1), 1),
    ((100, 100), 3),   # 0.02 * 141.4 = 2.83 -> 3
    ((75, 100), 2),    # 0.02 * 125 = 2.5 -> 2 (Python's round, as the official code)
    ((512, 512), 14),  # 0.02 * 724.1 = 14.48 -> 14
])
def test_boundary_width_rule(shape, d):
    assert boundary_width(shape) == d


def test_shifted_squares_d1():
    # 4x4 squares in a 10x10 image, the second one row lower.
    gt = _box_mask((10, 10), (2, 6), (2, 6))
    pred = _box_mask((10, 10), (3, 7), (2, 6))
    assert mask_iou(gt, pred) == pytest.approx(12 / 20)
    # d = 1: each boundary is the 12-pixel ring of its square; the rings share rows 3-5
    # at columns 2 and 5 (6 pixels): 6 / (12 + 12 - 6).
    assert mask_boundary(gt, 1).sum() == 12
    assert boundary_iou(gt, pred) == pytest.approx(6 / 18)


def test_image_border_counts_as_background():
    # Left 5 and left 4 columns of a 10x10 image; zero padding makes the image border
    # part of the boundary.
    gt = _box_mask((10, 10), (0, 10), (0, 5))
    pred = _box_mask((10, 10), (0, 10), (0, 4))
    assert mask_iou(gt, pred) == pytest.approx(40 / 50)
    assert mask_boundary(gt, 1).sum() == 50 - 8 * 3   # interior rows 1-8, cols 1-3
    assert mask_boundary(pred, 1).sum() == 40 - 8 * 2
    # Shared: rows 0 and 9 over columns 0-3 (8) and column 0 over rows 1-8 (8).
    assert boundary_iou(gt, pred) == pytest.approx(16 / (26 + 24 - 16))


def test_thick_boundary_d3():
    # 100x100 image -> d = 3. gt 20x20, pred the same minus its last column.
    gt = _box_mask((100, 100), (10, 30), (10, 30))
    pred = _box_mask((100, 100), (10, 30), (10, 29))
    assert mask_iou(gt, pred) == pytest.approx(380 / 400)
    gt_b, pred_b = 400 - 14 * 14, 380 - 14 * 13       # 3-fold erosions: 14x14 and 14x13
    shared = 380 - 14 * 14                             # pred minus gt's eroded core
    assert mask_boundary(gt, 3).sum() == gt_b
    assert mask_boundary(pred, 3).sum() == pred_b
    assert boundary_iou(gt, pred) == pytest.approx(shared / (gt_b + pred_b - shared))


def test_disjoint_and_empty():
    a = _box_mask((20, 20), (0, 5), (0, 5))
    b = _box_mask((20, 20), (10, 15), (10, 15))
    empty = np.zeros((20, 20), dtype=bool)
    assert mask_iou(a, b) == 0.0 and boundary_iou(a, b) == 0.0
    assert mask_iou(a, empty) == 0.0 and boundary_iou(a, empty) == 0.0
    assert mask_iou(empty, empty) == 1.0 and boundary_iou(empty, empty) == 1.0
    assert mask_iou(a, a) == 1.0 and boundary_iou(a, a) == 1.0


def test_cropped_computation_equals_whole_image():
    # boundary_iou crops to the masks; it must equal the plain whole-image definition.
    rng = np.random.default_rng(0)
    for _ in range(20):
        gt = np.zeros((60, 80), dtype=bool)
        pred = np.zeros((60, 80), dtype=bool)
        for mask in (gt, pred):
            y, x = rng.integers(0, 60), rng.integers(0, 80)
            mask[max(y - 15, 0):y + 15, max(x - 20, 0):x + 20] = True
            mask &= rng.random(mask.shape) > 0.1
        d = boundary_width(gt.shape)
        full = mask_iou(mask_boundary(gt, d), mask_boundary(pred, d))
        assert boundary_iou(gt, pred) == pytest.approx(full)


def test_shape_mismatch_and_means():
    with pytest.raises(ValueError, match="shape"):
        boundary_iou(np.ones((4, 4), bool), np.ones((4, 5), bool))
    assert mean_scores([0.5, 1.0], [0.25, 0.75]) == (0.75, 0.5)
    assert all(math.isnan(v) for v in mean_scores([], []))


# -- instance metrics: mSA and F1 (StarDist / elf definitions) ---------------------------------

def _instances():
    """Ground truth 3 objects; prediction: one shifted, one split in two, one missed, one
    false positive (10 x 12 pixels)."""
    gt = np.zeros((10, 12), dtype=np.uint16)
    gt[0:4, 0:4] = 1      # 16 px
    gt[0:4, 6:12] = 2     # 24 px
    gt[6:10, 0:4] = 3     # 16 px, missed
    pred = np.zeros((10, 12), dtype=np.uint16)
    pred[0:4, 0:5] = 5    # 20 px over gt 1: IoU 16/20 = 0.8
    pred[0:4, 6:9] = 6    # half of gt 2: IoU 12/24 = 0.5
    pred[0:4, 9:12] = 7   # the other half: IoU 0.5
    pred[6:10, 8:12] = 9  # nothing there: a false positive
    return gt, pred


def test_iou_matrix_by_hand():
    from napari_hq_sam.metrics import iou_matrix

    gt, pred = _instances()
    gt_ids, pred_ids, iou = iou_matrix(gt, pred)
    assert gt_ids.tolist() == [1, 2, 3] and pred_ids.tolist() == [5, 6, 7, 9]
    expected = np.zeros((3, 4))
    expected[0, 0], expected[1, 1], expected[1, 2] = 0.8, 0.5, 0.5
    np.testing.assert_allclose(iou, expected)


def test_counts_segmentation_accuracy_and_f1_by_hand():
    from napari_hq_sam.metrics import (
        IOU_THRESHOLDS,
        f1_at,
        instance_counts,
        mean_segmentation_accuracy,
    )

    gt, pred = _instances()
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    counts = instance_counts(gt, pred)
    # 0.5: gt 1 and one half of gt 2 match (IoU >= t, one to one): TP 2, FP 2, FN 1
    assert counts[0] == (2, 2, 1)
    # 0.55 to 0.8: only gt 1 (IoU exactly 0.8 matches at 0.8): TP 1, FP 3, FN 2
    assert counts[1:7] == [(1, 3, 2)] * 6
    # 0.85 to 0.95: nothing
    assert counts[7:] == [(0, 4, 3)] * 3
    # SA: 2/5 once, 1/6 six times, 0 three times
    assert mean_segmentation_accuracy(gt, pred) == pytest.approx((2 / 5 + 6 / 6) / 10)
    assert f1_at(gt, pred) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert f1_at(gt, pred, 0.9) == 0.0
    assert mean_segmentation_accuracy(gt, gt) == 1.0 and f1_at(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert mean_segmentation_accuracy(gt, empty) == 0.0
    # two empty images: 0, as StarDist and elf (TP = 0)
    assert mean_segmentation_accuracy(empty, empty) == 0.0


def test_matching_is_optimal_not_greedy():
    from napari_hq_sam.metrics import true_positives

    # gt a overlaps p best, but taking that pair leaves gt b without a partner
    iou = np.array([[0.6, 0.35],
                    [0.4, 0.0]])
    assert true_positives(iou, 0.3) == 2
    assert true_positives(iou, 0.5) == 1
    assert true_positives(np.zeros((0, 3)), 0.5) == 0


def test_ids_need_not_match_and_shapes_must():
    from napari_hq_sam.metrics import iou_matrix, mean_segmentation_accuracy

    gt, _ = _instances()
    renumbered = np.where(gt > 0, gt + 1000, 0).astype(np.uint32)
    assert mean_segmentation_accuracy(gt, renumbered) == 1.0
    with pytest.raises(ValueError, match="shape"):
        iou_matrix(gt, gt[:5])


def test_evaluate_labels_reports_msa_f1_and_best_overlap_ious():
    from napari_hq_sam.evaluation import evaluate_labels

    gt, pred = _instances()
    result = evaluate_labels(gt, pred)
    assert result.mSA == pytest.approx(0.14) and result.F1 == pytest.approx(4 / 7)
    assert (result.n_objects, result.n_predicted) == (3, 4)
    assert [o.iou for o in result.objects] == pytest.approx([0.8, 0.5, 0.0])
    # gt 1 (rows 0-3, cols 0-3) vs pred 5 (cols 0-4), d = 1: the rings share the top and
    # bottom rows of cols 0-3 and column 0 (4 + 4 + 2 = 10 px); rings 12 and 14 px
    assert result.objects[0].boundary_iou == pytest.approx(10 / (12 + 14 - 10))
    assert result.objects[2].boundary_iou == 0.0
    assert result.mIoU == pytest.approx(1.3 / 3)
    # a stack: the mean over slices holding objects (the empty middle one is skipped)
    stack_gt = np.stack([gt, np.zeros_like(gt), gt])
    stack_pred = np.stack([pred, np.zeros_like(pred), gt])
    stacked = evaluate_labels(stack_gt, stack_pred)
    assert [s.slice_index for s in stacked.slices] == [0, 2]
    assert stacked.mSA == pytest.approx((0.14 + 1.0) / 2)
    assert (stacked.n_objects, stacked.n_predicted) == (6, 7)
    assert "mSA" in stacked.table() and '"F1"' in stacked.to_json()
    with pytest.raises(ValueError, match="no objects"):
        evaluate_labels(np.zeros_like(gt), pred)
