"""Segment everything on tiled slices: objects merged across tiles, one id each, no seams.

The per-tile segmentation is an oracle (every ground-truth object visible in the tile,
cut where the tile cuts it), so what is checked is the merging, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from tile_oracle import OracleSegmenter, disk, ids_as_rgb, rgb_as_ids

from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.engine.everything import EverythingJob, segment_everything
from napari_hq_sam.engine.everything_tiled import segment_everything_tiled, tiles_and_cores
from napari_hq_sam.engine.seeds import GivenSeeds
from napari_hq_sam.engine.tiled import ArraySource
from napari_hq_sam.engine.tiles import Tiling
from napari_hq_sam.errors import Cancelled


@dataclass(frozen=True)
class OracleEverything:
    """Every object visible in a tile, as the tile shows it (ids of the tile)."""

    steps: int = 4
    calls: list = None

    def segment_image(self, segmenter, index, image, embedding, step, should_stop):
        self.calls.append(image.shape)
        ids = rgb_as_ids(image)
        out = np.zeros(ids.shape, np.uint32)
        for k, obj in enumerate(np.unique(ids[ids > 0]), start=1):
            out[ids == obj] = k
        return out


def scene(shape=(700, 900)) -> np.ndarray:
    """Ground-truth ids: disks across core borders and corners, one long bar, small ones."""
    ids = np.zeros(shape, int)
    objects = [((192, 192), 60), ((192, 500), 40), ((400, 384), 25), ((600, 100), 10),
               ((50, 800), 30), ((650, 850), 20)]
    for k, (centre, radius) in enumerate(objects, start=1):
        ids[disk(shape, centre, radius)] = k
    ids[300:330, 20:880] = 7  # longer than any tile: only a moved decode sees it whole
    return ids


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering of the ids (0 stays background)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def test_objects_across_tiles_come_out_whole_with_one_id_each():
    ids = scene()
    tiling = Tiling(tile=256, halo=32)
    calls = []
    steps = []
    labels = segment_everything_tiled(OracleEverything(calls=calls), OracleSegmenter(), (),
                                      ArraySource(ids_as_rgb(ids)), tiling, step=steps.append)
    assert same_partition(labels, ids)
    assert labels.max() == len(np.unique(ids)) - 1 == 7
    assert len(calls) == len(tiling.grid(ids.shape)) and set(calls) == {(256, 256, 3)}
    assert steps[-1] == 4 and steps == sorted(steps)


def test_encoder_runs_beyond_the_grid_are_bounded(monkeypatch):
    """With no budget left, cut objects keep what their tile saw: pieces, no overlaps."""
    monkeypatch.setattr("napari_hq_sam.engine.everything_tiled.EXTRA_WINDOWS", 0)
    ids = scene()
    tiling = Tiling(tile=256, halo=32)
    oracle = OracleSegmenter()
    labels = segment_everything_tiled(OracleEverything(calls=[]), oracle, (),
                                      ArraySource(ids_as_rgb(ids)), tiling)
    assert oracle.computed == len(tiling.grid(ids.shape))  # the grid only
    assert np.array_equal(labels > 0, ids > 0) or (labels[ids == 0] == 0).all()
    assert len(np.unique(labels[ids == 7])) >= 2  # the long bar: seen in pieces
    for k in range(1, 7):  # objects no tile cuts are whole, one id each
        if k in (1, 2):  # the disks across core borders are cut by their tiles
            continue
        assert len(np.unique(labels[ids == k])) == 1


def test_given_seeds_go_to_the_tile_whose_core_holds_them():
    tiling = Tiling(tile=256, halo=32)
    seeds = GivenSeeds({(): np.array([[10, 10], [191, 191], [192, 192], [500, 400]])})
    seen = []

    @dataclass(frozen=True)
    class SeedRecorder:
        seeds: GivenSeeds
        steps: int = 1

        def segment_image(self, segmenter, index, image, embedding, step, should_stop):
            seen.append(self.seeds.points[()].copy())
            return np.zeros(image.shape[:2], np.uint32)

    segment_everything_tiled(SeedRecorder(seeds), OracleSegmenter(), (),
                             ArraySource(np.zeros((600, 600, 3), np.uint8)), tiling)
    # every seed handed out once, in its own tile's frame (inside that tile)
    handed = np.concatenate([s for s in seen if len(s)])
    assert len(handed) == 4
    windows = [w for w, _ in tiles_and_cores(tiling, (600, 600))]
    for points, window in zip(seen, windows):
        assert ((points >= 0) & (points < 256)).all()
        for x, y in points + [window.left, window.top]:
            assert [x, y] in seeds.points[()].tolist()


def test_a_stop_between_tiles_cancels():
    calls = []
    with pytest.raises(Cancelled):
        segment_everything_tiled(OracleEverything(calls=calls), OracleSegmenter(), (),
                                 ArraySource(ids_as_rgb(scene())), Tiling(tile=256, halo=32),
                                 should_stop=lambda: len(calls) >= 2)
    assert len(calls) == 2


def test_real_model_tiled_everything_on_a_nuclei_mosaic(tiny_model, nuclei2d):
    """Random weights: checks the pipeline (ids, no overlaps, tiles) not mask quality."""
    image = np.tile(nuclei2d, (1, 2))[:300, :700]  # 300 x 700 grey: 1 x 2 tiles of 512
    config = AutoMaskConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    steps = []
    result = segment_everything(tiny_model, image, config, tiling=Tiling(tile=512, halo=64),
                                progress=lambda done, total: steps.append((done, total)))
    whole = segment_everything(tiny_model, image, config, tiling=None)
    assert result.computed >= 2 and whole.computed == 1
    assert result.labels.shape == (300, 700) and result.labels.dtype == np.uint32
    ids = np.unique(result.labels)[1:]
    assert len(ids) == result.objects and ids.tolist() == list(range(1, len(ids) + 1))
    assert steps[-1][0] == steps[-1][1] == EverythingJob(config).steps
