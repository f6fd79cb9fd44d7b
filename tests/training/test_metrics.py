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
