"""Automatic masks equal those of the official ``segment_anything_hq`` generator.

Same official-format checkpoint (random weights), same image, same parameters:
the same masks with the same scores come out, and the defaults are the official ones.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from napari_hq_sam.automatic import AutoMaskConfig, AutomaticMaskGenerator
from napari_hq_sam.engine.image import to_model_image

segment_anything_hq = pytest.importorskip("segment_anything_hq")


def test_defaults_are_the_official_ones():
    official = inspect.signature(segment_anything_hq.SamAutomaticMaskGenerator.__init__)
    ours = AutoMaskConfig()
    shared = [name for name in official.parameters if hasattr(ours, name)]
    assert len(shared) == 11
    for name in shared:
        assert getattr(ours, name) == official.parameters[name].default, name
    generate = inspect.signature(segment_anything_hq.SamAutomaticMaskGenerator.generate)
    assert ours.multimask_output is generate.parameters["multimask_output"].default is True
    predict = inspect.signature(segment_anything_hq.SamPredictor.predict_torch)
    assert ours.hq_token_only is predict.parameters["hq_token_only"].default is False


def test_masks_and_scores_match_official(tiny_checkpoint, tiny_model, nuclei2d):
    rgb = to_model_image(nuclei2d[200:296, 100:228])
    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                  box_nms_thresh=1.0)          # NMS off: compare every candidate
    ref_model = segment_anything_hq.sam_model_registry["vit_tiny"](
        checkpoint=str(tiny_checkpoint)).eval()
    ref = segment_anything_hq.SamAutomaticMaskGenerator(ref_model, **params).generate(rgb)
    ours = AutomaticMaskGenerator(tiny_model, AutoMaskConfig(**params)).generate(rgb)
    nonempty = [r for r in ref if r["area"] > 0]   # we also drop empty masks
    assert len(ours) == len(nonempty) >= 8
    by_point = {tuple(np.round(r["point_coords"][0], 3)): r for r in nonempty}
    for i in range(len(ours)):
        r = by_point[tuple(np.round(ours.points[i], 3))]
        assert ours.predicted_iou[i] == pytest.approx(r["predicted_iou"], abs=1e-4)
        assert ours.stability_score[i] == pytest.approx(r["stability_score"], abs=1e-3)
        assert (ours.mask(i) == r["segmentation"]).mean() >= 0.999


def test_iou_prefilter_keeps_the_official_masks(tiny_checkpoint, tiny_model, nuclei2d):
    """Masks are computed only for points that pass the predicted-IoU threshold: the
    kept masks are still the official ones (threshold at the median IoU: half go)."""
    rgb = to_model_image(nuclei2d[200:296, 100:228])
    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                  box_nms_thresh=1.0)
    ref_model = segment_anything_hq.sam_model_registry["vit_tiny"](
        checkpoint=str(tiny_checkpoint)).eval()
    every = segment_anything_hq.SamAutomaticMaskGenerator(ref_model, **params).generate(rgb)
    params["pred_iou_thresh"] = float(np.median([r["predicted_iou"] for r in every]))
    ref = segment_anything_hq.SamAutomaticMaskGenerator(ref_model, **params).generate(rgb)
    ours = AutomaticMaskGenerator(tiny_model, AutoMaskConfig(**params)).generate(rgb)
    nonempty = [r for r in ref if r["area"] > 0]
    assert 4 <= len(ours) == len(nonempty) < len(every)
    by_point = {tuple(np.round(r["point_coords"][0], 3)): r for r in nonempty}
    for i in range(len(ours)):
        r = by_point[tuple(np.round(ours.points[i], 3))]
        assert ours.predicted_iou[i] == pytest.approx(r["predicted_iou"], abs=1e-4)
        assert ours.stability_score[i] == pytest.approx(r["stability_score"], abs=1e-3)
        assert (ours.mask(i) == r["segmentation"]).mean() >= 0.999
