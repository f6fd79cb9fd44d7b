"""Seeds (engine/seeds.py) and the seeded generator (automatic_seeded.py).

Synthetic images with Gaussian blobs of known centres and diameters check the seed
finder; the seeded generator is checked for its labels (no overlaps, one id per kept
mask) and for its windows (the same logits as the whole-slice computation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.automatic_decoder import StagedDecoder
from napari_hq_sam.automatic_seeded import SeededMaskGenerator, window_tokens
from napari_hq_sam.engine.everything import segment_everything
from napari_hq_sam.engine.image import to_model_image
from napari_hq_sam.engine.seeds import (
    GivenSeeds,
    ImageSeeds,
    estimate_diameter,
    find_seeds,
    seeds_from_labels,
    seeds_from_table,
)
from napari_hq_sam.errors import InputError
from napari_hq_sam.predictor import HQSamPredictor


def blobs(centres, diameter, shape=(160, 160), amplitude=1.0, noise=0.02, seed=0):
    """Gaussian blobs whose LoG scale is that of a disk of ``diameter``."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = np.zeros(shape)
    s = diameter / (2 * np.sqrt(2))            # the blob's own LoG scale
    for x, y in centres:
        image += amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s ** 2))
    image += np.random.default_rng(seed).normal(0, noise, shape)
    return image


SMALL = [(30, 30), (90, 40), (130, 120), (40, 120), (100, 95)]
LARGE = [(80, 80)]


def matched(found, centres, tolerance):
    """Number of centres with exactly one seed within ``tolerance`` pixels."""
    d = np.linalg.norm(np.asarray(found)[:, None] - np.asarray(centres)[None], axis=-1)
    return int(((d < tolerance).sum(axis=0) == 1).sum())


def test_one_seed_per_blob_at_its_centre():
    found = find_seeds(blobs(SMALL, 12), 12)
    assert len(found) == len(SMALL)
    assert matched(found, SMALL, 2.0) == len(SMALL)


def test_the_diameter_decides_which_blobs_are_seeded():
    small = [(20, 20), (140, 20), (20, 140), (140, 140)]
    image = blobs(small, 10) + blobs(LARGE, 40, noise=0.0)
    at_small = find_seeds(image, 10)
    assert len(at_small) == 4 and matched(at_small, small, 2.0) == 4
    at_large = find_seeds(image, 40)
    assert len(at_large) == 1 and matched(at_large, LARGE, 3.0) == 1


def test_dark_objects():
    image = 1.0 - blobs(SMALL, 12)
    found = find_seeds(image, 12, dark=True)
    assert len(found) == len(SMALL) and matched(found, SMALL, 2.0) == len(SMALL)


def test_estimated_diameter_of_disks():
    yy, xx = np.mgrid[:200, :200]
    image = np.zeros((200, 200))
    for x, y in [(40, 40), (120, 50), (60, 140), (150, 150), (100, 100)]:
        image[(xx - x) ** 2 + (yy - y) ** 2 <= 9 ** 2] = 1.0     # diameter about 18
    assert estimate_diameter(image) == pytest.approx(18, rel=0.1)
    with pytest.raises(InputError, match="diameter"):
        estimate_diameter(np.zeros((64, 64)))


def test_image_seeds_estimate_when_no_diameter():
    seeds, diameter = ImageSeeds().seeds(blobs(SMALL, 14, noise=0.0) > 0.3)
    assert 10 < diameter < 18
    assert matched(seeds, SMALL, 2.0) == len(SMALL)
    with pytest.raises(InputError, match="diameter"):
        ImageSeeds(diameter=1)


def test_seeds_from_labels_lie_inside_their_objects():
    labels = np.zeros((40, 60), np.uint16)
    labels[5:15, 5:25] = 3
    labels[5:15, 25:45] = 7          # touches object 3
    labels[30:40, 50:60] = 9         # touches the image border
    seeds, ids = seeds_from_labels(labels)
    assert ids.tolist() == [3, 7, 9]
    xs, ys = seeds[:, 0].astype(int), seeds[:, 1].astype(int)
    assert labels[ys, xs].tolist() == [3, 7, 9]
    # most interior: 5 pixels from the edges of the 10-row objects
    assert seeds[0, 1] in (9.0, 10.0) and 9 <= seeds[0, 0] <= 19
    assert seeds[1, 1] in (9.0, 10.0) and 29 <= seeds[1, 0] <= 39


def test_seeds_from_the_previous_slice():
    labels = np.zeros((3, 20, 20), np.uint16)
    labels[0, 2:8, 2:8] = 1
    labels[0, 12:18, 10:16] = 2
    labels[2, 5:9, 5:9] = 4
    given = GivenSeeds.from_labels(labels)
    assert set(given.points) == {(1,)}        # slice 0 has no previous, slice 1 is empty
    xy, _ = given.seeds(None, (1,))
    assert labels[0][xy[:, 1].astype(int), xy[:, 0].astype(int)].tolist() == [1, 2]
    same = GivenSeeds.from_labels(labels, shift=0)
    assert set(same.points) == {(0,), (2,)}
    with pytest.raises(InputError, match="slice axis"):
        GivenSeeds.from_labels(labels[0])


def test_seeds_from_table_per_slice():
    rows = np.array([[0, 10.2, 20.0], [0, 5, 6], [2, 7, 8], [2, 1, 1]])
    seeds = seeds_from_table(rows, np.array([1, 1, 1, 0]), n_leading=1)
    assert set(seeds) == {(0,), (2,)}
    np.testing.assert_array_equal(seeds[(0,)], [[20.0, 10.2], [6, 5]])
    np.testing.assert_array_equal(seeds[(2,)], [[8, 7]])
    with pytest.raises(InputError, match="coordinates"):
        seeds_from_table(rows, None, n_leading=0)


# -- decoding seeds ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crop(nuclei2d):
    return to_model_image(nuclei2d[200:328, 100:228])


def test_windowed_mask_heads_equal_the_whole_grid(tiny_model, crop):
    predictor = HQSamPredictor(tiny_model)
    predictor.set_image(crop)
    decoder = StagedDecoder(tiny_model, predictor.features, predictor.hq_features)
    pts = torch.tensor([[[100.0, 200.0]], [[900.0, 40.0]], [[500.0, 500.0]]])
    tokens = decoder.tokens(pts, torch.ones(3, 1, dtype=torch.int))
    full = decoder.masks(tokens)
    origins = torch.tensor([[5, 0], [0, 50], [40, 40]])
    size = 14
    windows = decoder.masks(tokens, windows=origins, size=size)
    assert windows.shape == (3, 1, 56, 56)
    for i, (r, c) in enumerate(origins.tolist()):
        ref = full[i, 0, 4 * r:4 * (r + size), 4 * c:4 * (c + size)]
        # inside the window (its outer two pixels saw the window's zero padding)
        torch.testing.assert_close(windows[i, 0, 2:-2, 2:-2], ref[2:-2, 2:-2],
                                   atol=1e-4, rtol=1e-4)
        # a side on the grid's border is exact to its edge
        if c == 0:
            torch.testing.assert_close(windows[i, 0, 2:-2, 0], ref[2:-2, 0],
                                       atol=1e-4, rtol=1e-4)
        if c + size < 64:                 # an inner side: not exact there
            assert not torch.allclose(windows[i, 0, 2:-2, -1], ref[2:-2, -1], atol=1e-4)


def test_window_size_from_the_diameter():
    assert window_tokens(None, (512, 512)) is None
    assert window_tokens(20, (512, 512)) == 12             # 4 diameters = 10 tokens + margin
    assert window_tokens(200, (512, 512)) is None          # not smaller than the grid


def test_seeded_masks_windows_and_labels(tiny_model, crop):
    seeds = np.array([[20.0, 30.0], [64.0, 64.0], [100.0, 90.0], [30.0, 110.0]])
    config = AutoMaskConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0,
                            box_nms_thresh=1.0)
    gen = SeededMaskGenerator(tiny_model, config)
    windowed = gen.generate(crop, seeds, diameter=8.0)
    whole = gen.generate(crop, seeds)
    assert len(windowed) == len(whole) == len(seeds)
    np.testing.assert_array_equal(windowed.points, whole.points)
    assert sorted(map(tuple, whole.points)) == sorted(map(tuple, seeds))
    for i in range(len(seeds)):           # (random weights: masks reach past the window)
        assert np.array_equal(windowed.mask(i), whole.mask(i))
    np.testing.assert_allclose(windowed.predicted_iou, whole.predicted_iou, atol=1e-6)
    labels = whole.to_labels()
    ids = np.unique(labels[labels > 0])
    assert ids.tolist() == list(range(1, len(ids) + 1))
    painted = [i for i in range(len(whole)) if whole.mask(i).any()]
    order = np.argsort(-whole.predicted_iou, kind="stable")
    first = order[0]                      # the best mask is painted whole
    assert np.array_equal(labels == 1, whole.mask(first))
    assert len(ids) <= len(painted)
    for k in ids:                         # every id lies inside one seed's mask
        assert any(np.all(whole.mask(i)[labels == k]) for i in range(len(whole)))


def test_seeded_box_needs_a_diameter_and_seeds_inside(tiny_model, crop):
    with pytest.raises(InputError, match="diameter"):
        SeededMaskGenerator(tiny_model, box=True).generate(crop, np.array([[5.0, 5.0]]))
    with pytest.raises(InputError, match="outside"):
        SeededMaskGenerator(tiny_model).generate(crop, np.array([[500.0, 5.0]]))
    boxed = SeededMaskGenerator(tiny_model, AutoMaskConfig(
        pred_iou_thresh=0.0, stability_score_thresh=0.0), box=True).generate(
        crop, np.array([[64.0, 64.0]]), diameter=20.0)
    assert len(boxed) == 1


def test_segment_everything_with_seeds(tiny_model, nuclei3d):
    stack = nuclei3d[14:16, :48, :48]
    config = AutoMaskConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    given = GivenSeeds({(1,): np.array([[12.0, 10.0], [30.0, 30.0]])})
    steps = []
    run = segment_everything(tiny_model, stack, config, seeds=given,
                             progress=lambda done, total: steps.append((done, total)))
    assert not run.labels[0].any() and 1 <= run.labels[1].max() <= 2
    assert run.objects == run.labels.max()
    assert steps[-1] == (20, 20)
    found = segment_everything(tiny_model, stack, config, seeds=ImageSeeds(9.0))
    assert found.labels[0].max() >= 1
    ids = np.unique(found.labels[found.labels > 0])
    assert ids.tolist() == list(range(1, found.objects + 1))
