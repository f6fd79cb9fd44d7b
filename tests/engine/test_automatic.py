"""Automatic segmentation with a random-weight vit_tiny on the real nuclei images.

Random weights make few distinct masks and low predicted IoUs, so the runs that
need objects lower the thresholds; a coarse grid keeps the CPU time small. The
embeddings are computed once per image (shared cache) and reused by every test.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_hq_sam.automatic import AutoMaskConfig, AutomaticMaskGenerator
from napari_hq_sam.engine.cache import EmbeddingCache
from napari_hq_sam.engine.everything import segment_everything
from napari_hq_sam.engine.image import default_contrast_limits, to_model_image
from napari_hq_sam.engine.labels import relabel_consecutive, stitch_slices
from napari_hq_sam.engine.segmenter import SliceSegmenter

LOW = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labels arrays split the pixels the same way, whatever the ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def model_input(model, image, cache):
    """uint8 RGB of ``image`` as a run sees it, and its (cached) embedding."""
    rgb = to_model_image(image, default_contrast_limits(image))
    return rgb, SliceSegmenter(model, cache=cache).embeddings([rgb])[0]


@pytest.fixture(scope="module")
def cache():
    return EmbeddingCache(max_items=16)


@pytest.fixture(scope="module")
def crop2d(nuclei2d):
    """(96, 128) crop of the 2D nuclei image, about 10 nuclei."""
    return nuclei2d[200:296, 100:228]


@pytest.fixture(scope="module")
def stack2(nuclei3d):
    """(2, 61, 57) middle slices of the 3D nuclei stack."""
    return nuclei3d[15:17]


CFG = AutoMaskConfig(points_per_side=2, **LOW)      # 4 points: about 1 s per slice


@pytest.fixture(scope="module")
def run2d(tiny_model, crop2d, cache):
    return segment_everything(tiny_model, crop2d, CFG, cache=cache)


@pytest.fixture(scope="module")
def stack_run(tiny_model, stack2, cache):
    seen = []
    run = segment_everything(tiny_model, stack2, CFG, cache=cache,
                             progress=lambda d, t: seen.append((d, t)))
    return run, seen


def test_slice_labels_shape_dtype_ids(run2d, crop2d):
    labels = run2d.labels
    assert labels.shape == crop2d.shape and labels.dtype == np.uint32
    ids = np.unique(labels[labels > 0])
    assert ids.size >= 1, "low thresholds must keep objects"
    assert ids.tolist() == list(range(1, ids.size + 1))     # consecutive
    assert run2d.slices == [()] and not run2d.cancelled and run2d.objects == ids.size


def test_labels_are_the_masks_without_overlaps(tiny_model, crop2d, cache, run2d):
    """Each id covers a subset of one mask; where masks overlap the higher score wins."""
    rgb, embedding = model_input(tiny_model, crop2d, cache)
    masks = AutomaticMaskGenerator(tiny_model, CFG).generate(rgb, embedding)
    labels = masks.to_labels()
    assert np.array_equal(labels, run2d.labels)
    order = np.argsort(-masks.predicted_iou, kind="stable")
    covered = np.zeros(labels.shape, bool)
    expected = np.zeros(labels.shape, np.uint32)
    for rank, i in enumerate(order, start=1):
        m = masks.mask(i)
        expected[m & ~covered] = rank
        covered |= m
    assert np.array_equal(labels, relabel_consecutive(expected))
    assert np.array_equal(labels > 0, covered)


def test_higher_iou_threshold_never_keeps_more_masks(tiny_model, crop2d, cache):
    """With NMS off, a higher IoU threshold keeps a subset of the masks: never more.

    (With NMS on, dropping a high-scoring mask can let two masks it suppressed
    survive, so the count is not monotonic in general.)
    """
    rgb, embedding = model_input(tiny_model, crop2d, cache)
    gen = AutomaticMaskGenerator(tiny_model, AutoMaskConfig(points_per_side=3, box_nms_thresh=1.0,
                                                            **LOW))
    scores = np.sort(gen.generate(rgb, embedding).predicted_iou)
    assert scores.size >= 2
    # 0 disables the filter (official); then a threshold between two positive scores
    # (random weights give scores around 0), then one above every score
    positive = scores[scores > 0]
    middle = [float(positive[positive.size // 2 - 1])] if positive.size >= 2 else []
    thresholds = [0.0, *middle, max(float(scores.max()), 0.0) + 0.01]
    counts = []
    for thresh in thresholds:
        gen.config = AutoMaskConfig(points_per_side=3, pred_iou_thresh=thresh,
                                    stability_score_thresh=0.0, box_nms_thresh=1.0)
        kept = np.sort(gen.generate(rgb, embedding).predicted_iou)
        expected = scores if thresh == 0 else scores[scores > thresh]
        assert np.allclose(kept, expected)
        counts.append(kept.size)
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] == 0


def test_stack_run_equals_slice_runs(tiny_model, stack2, cache, stack_run):
    run, seen = stack_run
    assert run.labels.shape == stack2.shape and run.labels.dtype == np.uint32
    assert run.slices == [(0,), (1,)]
    assert seen == [(1, 2), (2, 2)]                            # 1 batch of 4 points a slice
    ids = np.unique(run.labels[run.labels > 0])
    assert ids.tolist() == list(range(1, ids.size + 1))        # unique through the stack
    limits = default_contrast_limits(stack2)
    for z in range(2):
        alone = segment_everything(tiny_model, stack2[z], CFG, contrast_limits=limits,
                                   cache=cache).labels
        assert alone.max() >= 1
        assert np.array_equal(relabel_consecutive(run.labels[z]), alone)
    assert not set(np.unique(run.labels[0])[1:]) & set(np.unique(run.labels[1])[1:])


def test_cancel_keeps_finished_slices(tiny_model, stack2, cache, stack_run):
    done = []
    run = segment_everything(tiny_model, stack2, CFG, cache=cache,
                             progress=lambda d, t: done.append(d),
                             should_stop=lambda: len(done) >= 1)
    assert run.cancelled and run.slices == [(0,)]
    assert np.array_equal(run.labels[0], stack_run[0].labels[0]) and run.labels[0].max() >= 1
    assert not run.labels[1:].any()


def test_stitching_keeps_slice_partitions(tiny_model, stack2, cache, stack_run):
    plain = stack_run[0]
    stitched = segment_everything(tiny_model, stack2, CFG, cache=cache, stitch=True,
                                  stitch_iou=0.3)
    for z in range(2):   # same objects in each slice, only the ids change
        assert same_partition(stitched.labels[z], plain.labels[z])
    assert np.array_equal(stitched.labels, stitch_slices(plain.labels, 0.3))
    ids = np.unique(stitched.labels[stitched.labels > 0])
    assert ids.tolist() == list(range(1, ids.size + 1))


def test_only_requested_slices_are_segmented(tiny_model, stack2, cache, stack_run):
    run = segment_everything(tiny_model, stack2, CFG, cache=cache, slices=[(1,)])
    assert run.slices == [(1,)]
    assert same_partition(run.labels[1], stack_run[0].labels[1]) and not run.labels[0].any()
    with pytest.raises(ValueError, match="does not exist"):
        segment_everything(tiny_model, stack2, CFG, cache=cache, slices=[(5,)])
