"""Slice segmenter (embedding via cache + many prompts) and labels pasting with undo."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hq_sam import HQSamPredictor
from napari_hq_sam.engine.cache import EmbeddingCache, model_signature
from napari_hq_sam.engine.image import default_contrast_limits, to_model_image
from napari_hq_sam.engine.labels import next_label_id, paste_masks, undo_changes
from napari_hq_sam.engine.prompts import ObjectPrompt
from napari_hq_sam.engine.segmenter import SliceSegmenter


def _boxes_around(labels, ids, pad=2):
    """XYXY boxes around ground-truth objects."""
    out = []
    for i in ids:
        rows, cols = np.nonzero(labels == i)
        out.append([cols.min() - pad, rows.min() - pad, cols.max() + pad, rows.max() + pad])
    return out


def test_segment_matches_predictor_and_reuses_embedding(tiny_model, nuclei2d, nuclei2d_labels,
                                                        tiny_checkpoint):
    image = to_model_image(nuclei2d, default_contrast_limits(nuclei2d))
    ids = np.unique(nuclei2d_labels)[1:4]
    boxes = _boxes_around(nuclei2d_labels, ids)
    rows, cols = np.nonzero(nuclei2d_labels == ids[0])
    prompts = [ObjectPrompt(box=b, object_id=k + 1) for k, b in enumerate(boxes)]
    prompts.append(ObjectPrompt(points=[[cols.mean(), rows.mean()]], labels=[1], object_id=9))
    cache = EmbeddingCache(model_signature(tiny_model, tiny_checkpoint), max_items=2)
    seg = SliceSegmenter(tiny_model, cache=cache)
    result = seg.segment(image, prompts)
    assert result.masks.shape == (4, 512, 512) and result.object_ids.tolist() == [1, 2, 3, 9]
    # same values as the predictor used directly
    ref = HQSamPredictor(tiny_model)
    ref.set_image(image)
    m, s, _ = ref.predict(box=np.array(boxes[1], float), multimask_output=False)
    assert np.array_equal(result.masks[1], m[0]) and result.scores[1] == pytest.approx(s[0])
    m, s, _ = ref.predict(point_coords=np.array([[cols.mean(), rows.mean()]]),
                          point_labels=np.array([1]), multimask_output=True)
    assert np.array_equal(result.masks[3], m[0])
    # second time on the same slice: no encoding
    again = seg.segment(image, prompts[:2])
    assert (seg.computed, seg.reused) == (1, 1)
    assert np.array_equal(again.masks, result.masks[:2])


def test_paste_never_overwrites_and_undo_restores():
    labels = np.zeros((3, 20, 30), np.uint16)
    labels[1, 5:10, 5:10] = 7
    original = labels.copy()
    a = np.zeros((20, 30), bool)
    a[8:15, 8:15] = True  # overlaps object 7
    b = np.zeros((20, 30), bool)
    b[0:3, 20:25] = True
    new = next_label_id(labels)
    assert new == 8
    changes = paste_masks(labels, (1,), [a, b], [new, new + 1])
    assert len(changes) == 2
    assert (labels[1][a & (original[1] == 7)] == 7).all()  # object 7 kept its pixels
    assert (labels[1][a & (original[1] == 0)] == 8).all()
    assert (labels[1][b] == 9).all() and not labels[[0, 2]].any()
    assert sum(c.changed_pixels for c in changes) == int((a & (original[1] == 0)).sum() + b.sum())
    over = paste_masks(labels, (1,), [a], [10], overwrite=True)
    assert (labels[1][a] == 10).all()
    undo_changes(labels, changes + over)
    assert np.array_equal(labels, original)
    # replace: re-segmenting object 7 moves it
    paste_masks(labels, (1,), [b], [7], replace=True)
    assert (labels == 7).sum() == b.sum() and (labels[1][b] == 7).all()
