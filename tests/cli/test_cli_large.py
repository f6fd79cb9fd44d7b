"""The CLI on images larger than the model input: tiled runs, zarr outputs slice by slice."""

from __future__ import annotations

import json

import numpy as np
import tifffile
import zarr

from napari_hq_sam.cli import main

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-thresh", "0",
        "--quiet"]


def model_args(checkpoint) -> list[str]:
    return ["--model", "vit_tiny", "--checkpoint", str(checkpoint), "--device", "cpu"]


def test_segment_a_large_zarr_with_boxes_across_tiles(tmp_path, tiny_checkpoint, nuclei2d,
                                                      capsys):
    """1400 x 1400 zarr, 512 px tiles: one id per box, only near the boxes, summary says tiles."""
    image = tmp_path / "big.zarr"
    z = zarr.open_array(image, mode="w", shape=(1400, 1400), chunks=(512, 512),
                        dtype=nuclei2d.dtype)
    z[:] = np.tile(nuclei2d, (3, 3))[:1400, :1400]
    boxes = [[370, 370, 400, 400],   # across the core corner at (384, 384)
             [50, 60, 90, 100],      # inside the first core
             [1200, 900, 1260, 960]]
    prompts = tmp_path / "boxes.json"
    prompts.write_text(json.dumps([{"box": b, "object": k + 1} for k, b in enumerate(boxes)]))
    out = tmp_path / "labels.zarr"
    assert main(["segment", str(image), "--prompts", str(prompts), "--out", str(out),
                 "--tile", "512", "--halo", "64", "--quiet", *model_args(tiny_checkpoint)]) == 0
    said = capsys.readouterr().out
    assert "in 512 px tiles (halo 64; a slice is 4 x 4 tiles" in said
    labels = np.asarray(zarr.open_array(out, mode="r"))
    assert labels.shape == (1400, 1400)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # each object lies within the windows its box can be routed or moved to
    for k, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        rows, cols = np.nonzero(labels == k)
        reach = 4 * 512
        assert rows.min() > y0 - reach and rows.max() < y1 + reach
        assert cols.min() > x0 - reach and cols.max() < x1 + reach
    # --halo too large for the tile: one line, exit 2, nothing written
    assert main(["segment", str(image), "--prompts", str(prompts), "--out",
                 str(tmp_path / "x.zarr"), "--tile", "512", "--halo", "300",
                 *model_args(tiny_checkpoint)]) == 2
    assert "halo" in capsys.readouterr().err and not (tmp_path / "x.zarr").exists()


def test_auto_to_zarr_is_written_slice_by_slice_and_equals_the_tiff(tmp_path, tiny_checkpoint,
                                                                    nuclei3d):
    stack = nuclei3d[14:17, :48, :48]
    image = tmp_path / "stack.tif"
    tifffile.imwrite(image, stack)
    common = ["auto", str(image), *model_args(tiny_checkpoint), *FAST]
    assert main([*common, "--out", str(tmp_path / "a.tif")]) == 0
    assert main([*common, "--out", str(tmp_path / "a.zarr")]) == 0
    as_tiff = tifffile.imread(tmp_path / "a.tif")
    as_zarr = np.asarray(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    assert as_tiff.max() >= 2 and np.array_equal(as_tiff, as_zarr)
    assert not list(tmp_path.glob("*.partial*"))
