"""The staged decoder of segment everything equals the model's own decoder.

Scores for every prompt, masks for the kept ones, the chunks on CPU threads or not:
the values are those of ``HQSamPredictor.decode_torch`` (the decoder's forward).
"""

from __future__ import annotations

import pytest
import torch

from napari_hq_sam.automatic_decoder import StagedDecoder
from napari_hq_sam.engine.image import to_model_image
from napari_hq_sam.predictor import HQSamPredictor


@pytest.fixture(scope="module")
def predictor(tiny_model, nuclei2d):
    p = HQSamPredictor(tiny_model)
    p.set_image(to_model_image(nuclei2d[200:328, 100:228]))
    return p


@pytest.mark.parametrize("threads", [1, 2])
def test_scores_and_masks_equal_the_decoder(predictor, threads):
    g = torch.Generator().manual_seed(0)
    points = torch.rand(10, 1, 2, generator=g) * 1024
    labels = torch.ones(10, 1, dtype=torch.int)
    ref_masks, ref_scores = predictor.decode_torch(points, labels)
    decoder = StagedDecoder(predictor.model, predictor.features, predictor.hq_features,
                            chunk=3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tokens = decoder.tokens(points, labels)
        assert torch.get_num_threads() == threads          # restored after the threads
        cut = float(ref_scores[:, 0].median())
        kept = decoder.tokens(points, labels, min_score=cut)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(tokens.scores, ref_scores[:, 0], atol=1e-5, rtol=1e-5)
    assert tokens.index.tolist() == list(range(10))
    torch.testing.assert_close(decoder.masks(tokens), ref_masks, atol=1e-4, rtol=1e-4)
    expected = torch.nonzero(ref_scores[:, 0] > cut)[:, 0]
    assert kept.index.tolist() == expected.tolist() and 3 <= len(kept) < 10
    torch.testing.assert_close(decoder.masks(kept), ref_masks[expected], atol=1e-4, rtol=1e-4)


def test_box_prompts_and_single_mask(predictor):
    points = torch.tensor([[[300.0, 400.0]], [[700.0, 200.0]]])
    labels = torch.ones(2, 1, dtype=torch.int)
    boxes = torch.tensor([[200.0, 300.0, 420.0, 520.0], [600.0, 100.0, 800.0, 300.0]])
    ref_masks, ref_scores = predictor.decode_torch(points, labels, boxes,
                                                   multimask_output=False, hq_token_only=True)
    decoder = StagedDecoder(predictor.model, predictor.features, predictor.hq_features)
    tokens = decoder.tokens(points, labels, boxes, multimask_output=False)
    assert tokens.token.tolist() == [0, 0]
    torch.testing.assert_close(tokens.scores, ref_scores[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoder.masks(tokens, hq_token_only=True), ref_masks,
                               atol=1e-4, rtol=1e-4)
