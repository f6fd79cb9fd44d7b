"""Tile geometry and prompt routing, checked exactly with an oracle in place of the model.

The oracle "segments" by reading the ground-truth id under a prompt in the window it
is given, so every mask it returns is what a perfect model would return when it sees
only that window: cut where the window cuts the object. Whatever the tiled path
stitches together is therefore a property of the routing, not of model weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from tile_oracle import OracleSegmenter, disk, ids_as_rgb

from napari_hq_sam.engine.labels import paste_masks
from napari_hq_sam.engine.prompts import ObjectPrompt
from napari_hq_sam.engine.tiled import ArraySource, decode_tiled
from napari_hq_sam.engine.tiles import Extent, Tiling, Window
from napari_hq_sam.errors import InputError


def test_grid_covers_the_slice_with_full_size_overlapping_tiles():
    tiling = Tiling(tile=256, halo=32)
    shape = (700, 1000)
    tiles = tiling.grid(shape)
    assert tiling.grid_shape(shape) == (4, 6) and len(tiles) == 24
    covered = np.zeros(shape, int)
    for w in tiles:
        assert w.shape == (256, 256)
        assert 0 <= w.top and w.bottom <= 700 and 0 <= w.left and w.right <= 1000
        covered[w.slices] += 1
    assert covered.min() >= 1
    # cores partition each axis; each core lies inside its tile with the halo around it
    # except where the slice edge stops it
    for length in shape:
        axis = tiling.axis_tiles(length)
        assert [a[0] for a in axis] == list(range(0, length, 192))
        assert axis[-1][1] == length
        for core0, core1, lo, hi in axis:
            assert lo <= max(core0 - 32, 0) and hi >= min(core1 + 32, length)


def test_an_axis_shorter_than_a_tile_is_one_window():
    tiling = Tiling(tile=256, halo=32)
    assert tiling.axis_tiles(200) == [(0, 200, 0, 200)]
    assert tiling.grid((200, 600))[0] == Window(0, 0, 200, 256)
    assert not tiling.applies((256, 256)) and tiling.applies((257, 10))


def test_route_uses_the_tile_whose_core_holds_the_prompt():
    tiling = Tiling(tile=256, halo=32)  # cores 0-191, 192-383, ...
    shape = (1000, 1000)
    # a point exactly on a core border belongs to the core that starts there
    assert tiling.route(shape, Extent(192, 191, 192, 191)) == Window(160, 0, 256, 256)
    # a small box straddling a core border: the tile of its centre's core holds it whole
    assert tiling.route(shape, Extent(180, 180, 200, 200)) == Window(0, 0, 256, 256)
    assert tiling.route(shape, Extent(185, 185, 205, 205)) == Window(160, 160, 256, 256)
    # a box whose centre tile cuts it: the grid tile holding it with the widest margin
    w = tiling.route(shape, Extent(150, 20, 300, 60))
    assert w.top <= 150 and w.bottom > 300 and w.shape == (256, 256)


def test_route_of_a_box_longer_than_a_tile_fits_the_box_and_its_halo():
    tiling = Tiling(tile=256, halo=32)
    w = tiling.route((1000, 1000), Extent(100, 200, 500, 260))
    assert (w.top, w.bottom) == (68, 533)  # 100 - 32 to 500 + 1 + 32
    assert w.left <= 200 and w.right > 260 and w.width == 256


@pytest.mark.parametrize("tile, halo", [(64, 25), (100, 1.5), (True, 2)])
def test_bad_tilings_are_refused(tile, halo):
    with pytest.raises(InputError, match="tile|halo"):
        Tiling(tile=tile, halo=halo)


def test_an_object_across_a_tile_corner_is_one_whole_mask():
    tiling = Tiling(tile=256, halo=32)
    shape = (800, 800)
    truth = disk(shape, (192, 192), 70)  # centred on the corner of four cores, 70 > halo
    source = ArraySource(ids_as_rgb(truth.astype(int) * 7))
    [placed] = decode_tiled(OracleSegmenter(), source, [
        ObjectPrompt(points=[[192, 192]], labels=[1], object_id=7)], tiling)
    labels = np.zeros(shape, np.uint16)
    paste_masks(labels, (), [placed.mask], [7], origins=[placed.origin])
    np.testing.assert_array_equal(labels == 7, truth)
    # it spans all four cores around the corner
    for rows, cols in [(slice(0, 192), slice(0, 192)), (slice(0, 192), slice(192, 384)),
                       (slice(192, 384), slice(0, 192)), (slice(192, 384), slice(192, 384))]:
        assert (labels[rows, cols] == 7).sum() > 3000


def test_a_box_bigger_than_a_tile_gets_its_whole_object():
    tiling = Tiling(tile=256, halo=32)
    shape = (900, 900)
    truth = np.zeros(shape, bool)
    truth[100:700, 300:420] = True  # 600 px tall: no tile holds it
    result = OracleSegmenter().segment(ArraySource(ids_as_rgb(truth.astype(int) * 3)), [
        ObjectPrompt(box=[300, 100, 419, 699], object_id=3)], tiling=tiling)
    np.testing.assert_array_equal(result.full_mask(0), truth)


def test_prompts_on_halo_and_core_borders_and_only_needed_tiles_are_embedded():
    tiling = Tiling(tile=256, halo=32)
    shape = (1000, 1000)
    ids = np.zeros(shape, int)
    centres = [(192, 100), (160, 400), (415, 415), (900, 900)]  # core border, halo border, ...
    for k, c in enumerate(centres, start=1):
        ids[disk(shape, c, 12)] = k
    oracle = OracleSegmenter()
    prompts = [ObjectPrompt(points=[[c[1], c[0]]], labels=[1], object_id=k)
               for k, c in enumerate(centres, start=1)]
    result = oracle.segment(ArraySource(ids_as_rgb(ids)), prompts, tiling=tiling)
    labels = np.zeros(shape, np.uint16)
    paste_masks(labels, (), result.masks, result.object_ids.tolist(), origins=result.origins)
    np.testing.assert_array_equal(labels, ids)
    assert oracle.windows_embedded == 4 < len(tiling.grid(shape))


class RegionOnlyLabels:
    """A labels array that refuses reads or writes larger than ``limit`` pixels."""

    def __init__(self, shape, limit):
        self.data, self.limit = np.zeros(shape, np.uint16), limit
        self.shape, self.dtype = self.data.shape, self.data.dtype

    def _check(self, key):
        assert self.data[key].size <= self.limit, f"touched {self.data[key].size} pixels"

    def __getitem__(self, key):
        self._check(key)
        return self.data[key]

    def __setitem__(self, key, value):
        self._check(key)
        self.data[key] = value


def test_placed_masks_touch_only_their_region_and_the_first_object_keeps_overlaps():
    labels = RegionOnlyLabels((20000, 20000), limit=100 * 100)
    a, b = np.ones((100, 100), bool), np.ones((50, 50), bool)
    changes = paste_masks(labels, (), [a, b], [1, 2], origins=[(19000, 500), (19075, 575)])
    assert len(changes) == 2
    region = labels.data[19000:19125, 500:625]
    assert (region == 1).sum() == 10000 and (region == 2).sum() == 50 * 50 - 25 * 25
    assert labels.data.sum(dtype=np.int64) == 10000 + 2 * (2500 - 625)
    with pytest.raises(InputError, match="outside"):
        paste_masks(labels, (), [a], [3], origins=[(20000, 0)])
