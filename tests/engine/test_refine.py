"""Refine every object of a labels image: prompts, overlap rules, ids kept, cancel, Dask."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hq_sam.engine.refine import (
    EMPTY,
    LOW_SCORE,
    MOVED,
    OVERLAPPED,
    _Candidate,
    interior_point,
    mask_logits,
    object_windows,
    refine_labels,
    resolve_overlaps,
    touching_source,
)
from napari_hq_sam.engine.segmenter import SliceSegmenter

CROP = (slice(200, 296), slice(200, 296))  # 8 nuclei of the real 2D sample, some touching
STACK = (slice(10, 13), slice(0, 24), slice(0, 24))  # 3 slices of the real stack, 3 nuclei each


class CountingEncode:
    """The default encoder, counting the slices it embeds."""

    def __init__(self):
        self.slices = 0

    def __call__(self, model, images):
        from napari_hq_sam.engine.encoder import encode_slices

        self.slices += len(images)
        return encode_slices(model, images)


def ids(labels) -> set[int]:
    return set(np.unique(labels).tolist()) - {0}


def iou(a, b) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


# -- prompts ----------------------------------------------------------------------------------

def test_mask_logits_follow_the_boundary_with_subpixel_accuracy():
    mask = np.zeros((512, 512), dtype=bool)
    mask[:, :129] = True  # 129 columns: low-res column 64 (pixels 128, 129) is half covered
    logits = mask_logits(mask)
    assert logits.shape == (1, 256, 256) and logits.dtype == np.float32
    inside = np.log((1 - 1e-3) / 1e-3)
    np.testing.assert_allclose(logits[0, :, :64], inside, rtol=1e-6)
    np.testing.assert_allclose(logits[0, :, 64], 0.0, atol=1e-6)
    np.testing.assert_allclose(logits[0, :, 65:], -inside, rtol=1e-6)


def test_mask_logits_pad_a_non_square_frame_with_zero():
    mask = np.zeros((100, 200), dtype=bool)  # resized to 512 x 1024: 128 low-res rows
    mask[10:40, 20:60] = True
    logits = mask_logits(mask)[0]
    assert (logits[128:] == 0).all()
    assert (logits[:128] != 0).all()
    # the object: rows 10-40 x 20-60 of 100 x 200 are low-res rows 12.8-51.2, cols 25.6-76.8
    assert logits[13:51, 26:76].min() > 6 and logits[:12].max() < -6


def test_mask_logits_come_back_as_the_mask_through_the_model_frame(tiny_model, nuclei2d_labels):
    import torch

    labels = nuclei2d_labels[:96, :160]  # not square: padding and scale both matter
    (object_id, _), *_ = object_windows(labels)
    mask = labels == object_id
    logits = torch.as_tensor(mask_logits(mask))[None]
    back = tiny_model.postprocess_masks(logits, (614, 1024), mask.shape)[0, 0].numpy() > 0
    assert iou(back, mask) > 0.9


def test_interior_point_is_the_distance_transform_maximum():
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:9, 3:20] = True     # 7 rows: centre row 5
    mask[9:18, 3:6] = True     # a thin leg, closer to an edge everywhere
    x, y = interior_point(mask)
    assert y == 5 and 6 <= x <= 16  # the bar's middle row, away from its ends
    edge = np.zeros((5, 5), dtype=bool)
    edge[1:4, :3] = True  # touches the crop's border: the border counts as outside
    assert interior_point(edge) == (1.0, 2.0)


def test_object_windows_handle_sparse_huge_ids():
    labels = np.zeros((6, 6), dtype=np.uint32)
    labels[1:3, 1:4] = 3_000_000_000
    labels[4, 5] = 7
    assert object_windows(labels) == [(7, (slice(4, 5), slice(5, 6))),
                                      (3_000_000_000, (slice(1, 3), slice(1, 4)))]


# -- overlap rules ----------------------------------------------------------------------------

def _candidate(object_id, mask, score):
    full = (slice(0, mask.shape[0]), slice(0, mask.shape[1]))
    return _Candidate(object_id, full, mask, score, 1.0)


def test_overlaps_go_to_the_source_owner_then_the_higher_score():
    source = np.zeros((4, 8), dtype=np.uint16)
    source[:, 0:3] = 1
    source[:, 3:5] = 2
    source[:, 7] = 3  # kept: its source mask stays whole
    windows = {i: w for i, w in object_windows(source)}
    one = np.zeros((4, 8), bool)
    one[:, 0:4] = True   # reaches into 2's column 3
    one[:, 5] = True     # free column, also claimed by 2
    one[:, 7] = True     # 3's pixels: 3 is kept
    two = np.zeros((4, 8), bool)
    two[:, 3] = True     # releases column 4
    two[:, 5] = True
    out, lost = resolve_overlaps(source, windows, [_candidate(1, one, 0.6),
                                                   _candidate(2, two, 0.9)], {3})
    assert lost == []
    expected = np.zeros((4, 8), dtype=np.uint16)
    expected[:, 0:3] = 1
    expected[:, 3] = 2   # owner keeps it
    expected[:, 4] = 0   # released by its owner, claimed by no one: background
    expected[:, 5] = 2   # nobody's source: the higher score
    expected[:, 7] = 3   # kept object's source mask wins over a claim
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == source.dtype
    # equal scores on a free pixel: the lower id
    out, _ = resolve_overlaps(source, windows, [_candidate(1, one, 0.7),
                                                _candidate(2, two, 0.7)], {3})
    assert (out[:, 5] == 1).all()


def test_an_object_left_without_pixels_is_reported_lost():
    source = np.zeros((3, 6), dtype=np.uint8)
    source[:, :3] = 1
    source[:, 3:] = 2
    windows = {i: w for i, w in object_windows(source)}
    two = np.zeros((3, 6), bool)
    two[:, :3] = True  # only 1's pixels, which 1 keeps
    one = source == 1
    _, lost = resolve_overlaps(source, windows, [_candidate(1, one, 0.5),
                                                 _candidate(2, two, 0.99)], set())
    assert lost == [2]


def test_fragments_away_from_the_source_are_dropped():
    source = np.zeros((10, 10), bool)
    source[2:5, 2:5] = True
    mask = np.zeros((10, 10), bool)
    mask[1:5, 1:5] = True   # touches the source
    mask[8:10, 8:10] = True  # another object in the box
    kept = touching_source(mask, source)
    assert kept[1:5, 1:5].all() and not kept[8:, 8:].any()
    assert not touching_source(mask & ~np.pad(np.ones((6, 6), bool), (0, 4)), source).any()


def test_judge_gives_each_reason():
    from napari_hq_sam.engine.refine import judge

    source = np.zeros((12, 12), dtype=np.uint16)
    source[2:6, 2:6] = 4   # 16 px
    window = object_windows(source)[0][1]
    settings = dict(score_threshold=0.5, iou_threshold=0.5)

    def mask(rows, cols):
        out = np.zeros((12, 12), bool)
        out[rows, cols] = True
        return out

    assert judge(4, window, source, np.zeros((12, 12), bool), 0.9, **settings) == (EMPTY, 0.0)
    assert judge(4, window, source, mask(slice(8, 11), slice(8, 11)), 0.9,
                 **settings) == (MOVED, 0.0)
    # 2 x 2 of the 16 source pixels: IoU 4/16, below 0.5
    assert judge(4, window, source, mask(slice(2, 4), slice(2, 4)), 0.9,
                 **settings) == (MOVED, 0.25)
    # 2 x 4: IoU 8/16, exactly the threshold, is refined
    assert judge(4, window, source, mask(slice(2, 4), slice(2, 6)), 0.9, **settings).iou == 0.5
    # one column more than the source plus a fragment away from it: IoU 16/20
    grown = mask(slice(2, 6), slice(2, 7)) | mask(slice(9, 11), slice(9, 11))
    cand = judge(4, window, source, grown, 0.9, **settings)
    assert cand.iou == pytest.approx(16 / 20) and cand.score == 0.9
    assert cand.mask.sum() == 20 and not cand.mask[-2:, -2:].any()  # fragment dropped
    assert judge(4, window, source, grown, 0.3, **settings) == (LOW_SCORE, pytest.approx(0.8))
    assert judge(4, window, source, grown, float("nan"), **settings)[0] == LOW_SCORE


# -- runs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crop(nuclei2d, nuclei2d_labels):
    return nuclei2d[CROP], nuclei2d_labels[CROP].copy()


@pytest.fixture(scope="module")
def segmenter(tiny_model):
    return SliceSegmenter(tiny_model)


@pytest.fixture(scope="module")
def refined(crop, segmenter):
    image, labels = crop
    before = labels.copy()
    result = refine_labels(image, labels, segmenter=segmenter, score_threshold=-1.0,
                           iou_threshold=0.0, use_point=True)
    np.testing.assert_array_equal(labels, before)  # the source is never written
    return result


def test_refine_keeps_ids_and_each_object_overlaps_its_source(crop, refined):
    _, labels = crop
    out = refined.labels
    assert out.shape == labels.shape and out.dtype == labels.dtype
    assert ids(out) == ids(labels) and refined.objects == len(ids(labels)) == 8
    assert refined.refined + len(refined.kept) == refined.objects
    assert refined.refined >= 4  # thresholds off: only empty or overlapped masks are kept
    assert {k.reason for k in refined.kept} <= {EMPTY, MOVED, OVERLAPPED}
    assert all(k.iou == 0 for k in refined.kept if k.reason == MOVED)  # only if not touching
    kept = {k.object_id for k in refined.kept}
    for object_id in ids(labels):
        new, old = out == object_id, labels == object_id
        assert (new & old).any()
        if object_id in kept:
            np.testing.assert_array_equal(new, old)
    assert not np.array_equal(out, labels)  # HQ masks replaced the source masks
    assert sorted(obj for (_, obj) in refined.scores) == sorted(ids(labels))
    assert refined.slices == [()] and not refined.cancelled


def test_objects_it_cannot_improve_keep_their_mask_and_are_listed(crop, segmenter, refined):
    image, labels = crop
    calls = []
    # whole-number floats are ids, kept in the narrowest labels dtype
    low = refine_labels(image, labels.astype(np.float64), segmenter=segmenter,
                        score_threshold=1.0, iou_threshold=0.0, batch_size=3,
                        progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(low.labels, labels)
    assert low.labels.dtype == np.uint16
    assert calls == [(1, 3), (2, 3), (3, 3)]  # one slice: a step per decoder call (3 of 8)
    assert low.refined == 0 and low.computed == 0  # the embedding came from the cache
    decoded = [k for k in low.kept if k.reason != EMPTY]
    assert decoded and all(k.reason == LOW_SCORE and k.score < 1.0 for k in decoded)
    assert sorted(k.object_id for k in low.kept) == sorted(ids(labels))
    assert "object" in low.kept[0].describe() and "predicted IoU" in low.kept[0].describe()
    assert low.kept_reasons() == {r: n for r, n in {
        EMPTY: len(low.kept) - len(decoded), LOW_SCORE: len(decoded)}.items() if n}

    strict = refine_labels(image, labels, segmenter=segmenter, score_threshold=-1.0,
                           iou_threshold=1.0)
    np.testing.assert_array_equal(strict.labels, labels)
    assert {k.reason for k in strict.kept} <= {EMPTY, MOVED}
    moved = [k for k in strict.kept if k.reason == MOVED]
    assert moved and all(0 <= k.iou < 1 for k in moved) and any(k.iou > 0 for k in moved)


def test_stack_refines_each_slice_and_cancel_keeps_finished_ones(nuclei3d, nuclei3d_labels,
                                                                 tiny_model):
    image, labels = nuclei3d[STACK], nuclei3d_labels[STACK]
    encode = CountingEncode()
    segmenter = SliceSegmenter(tiny_model, encode=encode)
    reports = []

    def stop_after_first():
        return len(reports) >= 1

    result = refine_labels(image, labels, segmenter=segmenter, score_threshold=-1.0,
                           iou_threshold=0.0, progress=lambda d, t: reports.append((d, t)),
                           should_stop=stop_after_first)
    assert result.cancelled and result.slices == [(0,)] and reports == [(1, 3)]
    assert encode.slices == 1
    np.testing.assert_array_equal(result.labels[1:], labels[1:])
    assert ids(result.labels[0]) == ids(labels[0])
    assert all(k.slice_index == (0,) for k in result.kept)

    whole = refine_labels(image, labels, segmenter=segmenter, score_threshold=-1.0,
                          iou_threshold=0.0)
    assert whole.slices == [(0,), (1,), (2,)] and not whole.cancelled
    assert (whole.computed, whole.reused) == (2, 1)  # the cancelled run's slice is cached
    np.testing.assert_array_equal(whole.labels[0], result.labels[0])
    for z in range(3):
        assert ids(whole.labels[z]) == ids(labels[z])
    assert whole.objects == sum(len(ids(s)) for s in labels)


def test_large_slices_are_refined_tile_by_tile(crop, tiny_model):
    from napari_hq_sam.engine.refine import TILE_MARGIN
    from napari_hq_sam.engine.tiles import Extent, Tiling

    image, labels = crop
    tiling = Tiling(tile=64, halo=16)  # the 96 x 96 crop is 'large' for 64 px tiles
    routed = {}
    for object_id, (rows, cols) in object_windows(labels):
        extent = Extent(rows.start, cols.start, rows.stop - 1, cols.stop - 1)
        routed[object_id] = tiling.route(labels.shape, extent.grown(TILE_MARGIN))
    encode = CountingEncode()
    calls = []
    result = refine_labels(image, labels, segmenter=SliceSegmenter(tiny_model, encode=encode),
                           tiling=tiling, score_threshold=-1.0, iou_threshold=0.0,
                           progress=lambda d, t: calls.append((d, t)))
    assert encode.slices == len(set(routed.values())) < len(routed)  # windows, not objects
    assert ids(result.labels) == ids(labels) and result.refined > 0
    assert result.refined + len(result.kept) == 8 and calls[-1] == (1, 1)
    kept = {k.object_id for k in result.kept}
    for object_id, window in routed.items():
        new = result.labels == object_id
        if object_id in kept:
            np.testing.assert_array_equal(new, labels == object_id)
        else:  # the refined mask lies in the window the model saw
            inside = np.zeros_like(new)
            inside[window.slices] = True
            assert new.any() and not (new & ~inside).any()
    untiled = refine_labels(image, labels, segmenter=SliceSegmenter(tiny_model), tiling=None,
                            score_threshold=-1.0, iou_threshold=0.0)
    assert not np.array_equal(untiled.labels, result.labels)  # another frame, other masks


def test_bad_inputs_are_refused_before_any_encoding(crop, tiny_model):
    image, labels = crop
    encode = CountingEncode()
    segmenter = SliceSegmenter(tiny_model, encode=encode)
    cases = [
        (labels[:50], "do not match"),
        (labels.astype(np.float32) + 0.5, "whole-number"),
        (labels.astype(np.int32) - 1, "negative"),
        (np.zeros_like(labels), "no objects"),
        (labels.astype(str), "integer object ids"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            refine_labels(image, bad, segmenter=segmenter)
    for kwargs, message in [({"score_threshold": 1.5}, "score_threshold"),
                            ({"iou_threshold": float("nan")}, "iou_threshold"),
                            ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=message):
            refine_labels(image, labels, segmenter=segmenter, **kwargs)
    with pytest.raises(ValueError, match="model or a segmenter"):
        refine_labels(image, labels)
    assert encode.slices == 0


def test_dask_run_matches_single_process(nuclei3d, nuclei3d_labels, tiny_checkpoint,
                                         segmenter):
    from distributed import Client, LocalCluster

    from napari_hq_sam.engine.distributed import ModelSpec
    from napari_hq_sam.engine.refine import refine_labels_distributed

    image, labels = nuclei3d[STACK][:2], nuclei3d_labels[STACK][:2]
    spec = ModelSpec("vit_tiny", str(tiny_checkpoint), device="cpu")
    options = dict(score_threshold=-1.0, iou_threshold=0.0)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        remote = refine_labels_distributed(image, labels, spec, client=client, **options)
    local = refine_labels(image, labels, segmenter, **options)  # a segmenter in model's place
    np.testing.assert_array_equal(remote.labels, local.labels)
    assert remote.kept == local.kept and remote.refined == local.refined
    assert remote.slices == [(0,), (1,)]
