"""Logits of napari-hq-sam equal those of the official segment_anything_hq package.

Both load the same official-format checkpoint (random, perturbed weights) and
run on a real nuclei image and on a random one, for every prompt kind and both
output flags. Target: worst relative logit difference <= 1e-4 and thresholded
masks agreeing on >= 99.99 % of pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nuclei_utils import grey_to_rgb

from napari_hq_sam import HQSamPredictor, build_hq_sam

segment_anything_hq = pytest.importorskip("segment_anything_hq")

MAX_REL_DIFF = 1e-4
MIN_MASK_AGREEMENT = 0.9999


def _nucleus_prompts(labels: np.ndarray) -> dict[str, dict]:
    """Prompts around a real nucleus: (X, Y) points and an XYXY box."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ys, xs = np.nonzero(labels == ids[np.argmax(counts)])
    cx, cy = float(xs.mean()), float(ys.mean())
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)
    return _prompt_cases(cx, cy, box)


def _prompt_cases(cx: float, cy: float, box: np.ndarray) -> dict[str, dict]:
    pos = np.array([[cx, cy]])
    neg = np.array([[cx, cy], [box[2] + 15.0, box[3] + 10.0]])
    return {
        "points": {"point_coords": pos, "point_labels": np.array([1])},
        "negative_points": {"point_coords": neg, "point_labels": np.array([1, 0])},
        "box": {"box": box},
        "box_points": {"box": box, "point_coords": neg, "point_labels": np.array([1, 0])},
    }


def _relative_difference(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


@pytest.fixture(scope="module", params=["vit_tiny", "vit_b"])
def predictor_pair(request, tiny_checkpoint, vit_b_checkpoint, nuclei2d, nuclei2d_labels):
    """(model type, {image name: (ours, official, prompt cases)})."""
    model_type = request.param
    checkpoint = tiny_checkpoint if model_type == "vit_tiny" else vit_b_checkpoint
    ref_model = segment_anything_hq.sam_model_registry[model_type](checkpoint=str(checkpoint))
    ours_model = build_hq_sam(model_type, checkpoint)
    rng = np.random.default_rng(7)
    images = {
        "nuclei": (grey_to_rgb(nuclei2d), _nucleus_prompts(nuclei2d_labels)),
        "random": (rng.integers(0, 256, (300, 420, 3), dtype=np.uint8),
                   _prompt_cases(200.0, 140.0, np.array([120.0, 60.0, 310.0, 230.0]))),
    }
    pairs = {}
    for name, (image, cases) in images.items():
        ours, ref = HQSamPredictor(ours_model), segment_anything_hq.SamPredictor(ref_model.eval())
        ours.set_image(image)
        ref.set_image(image)
        pairs[name] = (ours, ref, cases)
    return model_type, pairs


@pytest.mark.parametrize("multimask_output", [True, False])
@pytest.mark.parametrize("hq_token_only", [True, False])
def test_logits_match_official(predictor_pair, multimask_output, hq_token_only):
    model_type, pairs = predictor_pair
    for image_name, (ours, ref, cases) in pairs.items():
        for case_name, prompt in cases.items():
            kw = dict(prompt, multimask_output=multimask_output, hq_token_only=hq_token_only,
                      return_logits=True)
            o_masks, o_scores, o_low = ours.predict(**kw)
            r_masks, r_scores, r_low = ref.predict(**kw)
            assert o_masks.shape == r_masks.shape == (1, *ours.original_size)
            diff = _relative_difference(o_masks, r_masks)
            agreement = float(((o_masks > 0) == (r_masks > 0)).mean())
            where = f"{model_type}/{image_name}/{case_name}"
            assert diff <= MAX_REL_DIFF, f"{where}: relative logit difference {diff:.2e}"
            assert agreement >= MIN_MASK_AGREEMENT, f"{where}: masks agree on {agreement:.6f}"
            assert _relative_difference(o_low, r_low) <= MAX_REL_DIFF, where
            np.testing.assert_allclose(o_scores, r_scores, rtol=1e-4, atol=1e-5)
            # The mask prompt: feed the low-res logits back, as users do to refine.
            kw_mask = dict(kw, mask_input=r_low)
            o_masks2 = ours.predict(**kw_mask)[0]
            r_masks2 = ref.predict(**kw_mask)[0]
            assert _relative_difference(o_masks2, r_masks2) <= MAX_REL_DIFF, where + "+mask"


def test_thresholded_masks_match_and_are_not_trivial(predictor_pair):
    """Boolean masks equal the official ones and are neither empty nor full."""
    _, pairs = predictor_pair
    ours, ref, cases = pairs["nuclei"]
    for prompt in cases.values():
        o_mask, o_score, _ = ours.predict(**prompt)
        r_mask, r_score, _ = ref.predict(**prompt)
        assert o_mask.dtype == bool and o_mask.shape == (1, 512, 512)
        assert (o_mask == r_mask).mean() >= MIN_MASK_AGREEMENT
    fractions = [ours.predict(**p)[0].mean() for p in cases.values()]
    assert len({round(float(f), 4) for f in fractions}) > 1, "every prompt gave the same mask"


def test_batched_boxes_match_official(predictor_pair):
    """The torch twin on several boxes at once equals the official batched call."""
    _, pairs = predictor_pair
    ours, ref, _ = pairs["random"]
    boxes = torch.tensor([[10.0, 20.0, 200.0, 150.0], [150.0, 100.0, 400.0, 290.0],
                          [50.0, 50.0, 120.0, 90.0]])
    boxes = ours.transform.apply_boxes_torch(boxes, ours.original_size)
    for hq_only in (True, False):
        o = ours.predict_torch(None, None, boxes=boxes, multimask_output=True,
                               return_logits=True, hq_token_only=hq_only)
        r = ref.predict_torch(None, None, boxes=boxes, multimask_output=True,
                              return_logits=True, hq_token_only=hq_only)
        assert o[0].shape == (3, 1, 300, 420)
        assert _relative_difference(o[0].numpy(), r[0].numpy()) <= MAX_REL_DIFF
        torch.testing.assert_close(o[1], r[1], rtol=1e-4, atol=1e-5)


def test_embedding_round_trip_gives_identical_logits(predictor_pair):
    """A restored embedding (as a cache would) reproduces the logits exactly."""
    model_type, pairs = predictor_pair
    ours, _, cases = pairs["nuclei"]
    embedding = ours.get_image_embedding()
    assert embedding.embeddings.shape == (1, 256, 64, 64)
    assert embedding.hq_features.shape == (1, 32, 256, 256)
    restored = HQSamPredictor(ours.model)
    restored.set_image_embedding(embedding)
    for prompt in cases.values():
        a = ours.predict(**prompt, return_logits=True)[0]
        b = restored.predict(**prompt, return_logits=True)[0]
        np.testing.assert_array_equal(a, b)
