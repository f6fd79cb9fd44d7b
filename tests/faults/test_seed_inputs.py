"""Fault matrix, seeded segment everything (``hqsam auto --seeds``).

Each case is refused in one line before any model work (the checkpoint given does
not exist, so the seed error showing proves the order), the inputs are unchanged
and no output is left.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from fault_utils import assert_user_error, leftovers, run_cli, snapshot

POINTS = "index,axis-0,axis-1\n"

# name -> (extra arguments, points file content or None, fragments of the error)
CASES = {
    "unknown_mode": (["--seeds", "blobs"], None, ["--seeds", "'image' or 'points FILE'"]),
    "points_without_file": (["--seeds", "points"], None, ["'image' or 'points FILE'"]),
    "missing_file": (["--seeds", "points", "{tmp}/none.csv"], None, ["none.csv",
                                                                   "does not exist"]),
    "point_outside": (["--seeds", "points", "{file}"], POINTS + "0,10,300\n",
                      ["outside", "64 x 64"]),
    "no_positive_point": (["--seeds", "points", "{file}"],
                          "index,axis-0,axis-1,label\n0,10,10,negative\n",
                          ["no positive points"]),
    "three_coordinates": (["--seeds", "points", "{file}"], "index,axis-0,axis-1,axis-2\n"
                          "0,1,10,10\n", ["3 coordinates", "2 spatial axes"]),
    "diameter_alone": (["--diameter", "20"], None, ["--diameter", "--seeds image"]),
    "diameter_zero": (["--seeds", "image", "--diameter", "0"], None, ["--diameter"]),
    "box_without_diameter": (["--seeds", "points", "{file}", "--seed-box"],
                             POINTS + "0,10,10\n", ["--seed-box", "--diameter"]),
    "seeds_on_dask": (["--seeds", "image", "--workers", "2"], None, ["--workers"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_seed_input_refused_before_the_model(tmp_path, name):
    extra, content, fragments = CASES[name]
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 200, (64, 64), np.uint8))
    seeds_file = tmp_path / "seeds.csv"
    if content is not None:
        seeds_file.write_text(content)
    before = snapshot(tmp_path)
    extra = [a.format(tmp=tmp_path, file=seeds_file) for a in extra]
    outcome = run_cli(["auto", image, "--model", "vit_tiny", "--checkpoint",
                       tmp_path / "missing.pth", "--out", tmp_path / "out.tif", *extra])
    assert_user_error(outcome, *fragments)
    assert snapshot(tmp_path) == before
    assert leftovers(tmp_path) == []
