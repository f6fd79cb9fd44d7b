"""``hqsam auto --seeds``: seeded segment everything from the command line."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.cli import main
from napari_hq_sam.engine.everything import segment_everything
from napari_hq_sam.engine.seeds import GivenSeeds, ImageSeeds

FILTERS_OFF = ["--pred-iou-thresh", "0", "--stability-thresh", "0", "--quiet"]
CFG = AutoMaskConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0)


def test_seeds_from_the_image_and_from_a_points_file(tmp_path, tiny_checkpoint, tiny_model,
                                                     nuclei3d):
    stack = nuclei3d[14:16, :48, :48]
    image = tmp_path / "stack.tif"
    tifffile.imwrite(image, stack)
    common = ["--model", "vit_tiny", "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
              *FILTERS_OFF]
    found = tmp_path / "found.tif"
    assert main(["auto", str(image), "--out", str(found), "--seeds", "image",
                 "--diameter", "9", *common]) == 0
    expected = segment_everything(tiny_model, stack, CFG, seeds=ImageSeeds(9.0)).labels
    assert np.array_equal(tifffile.imread(found), expected) and expected.max() >= 2

    points = tmp_path / "seeds.csv"          # napari's Points export: z, y, x
    points.write_text("index,axis-0,axis-1,axis-2\n0,1,10,12\n1,1,30,30\n")
    given = tmp_path / "given.tif"
    assert main(["auto", str(image), "--out", str(given), "--seeds", "points", str(points),
                 *common]) == 0
    labels = tifffile.imread(given)
    seeds = GivenSeeds({(1,): np.array([[12.0, 10.0], [30.0, 30.0]])})
    assert np.array_equal(labels, segment_everything(tiny_model, stack, CFG,
                                                     seeds=seeds).labels)
    assert not labels[0].any() and 1 <= labels[1].max() <= 2
