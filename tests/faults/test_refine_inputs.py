"""Fault matrix, ``hqsam refine`` and ``hqsam evaluate --predicted``: damaged labels and options.

Every case is refused before the model loads, in one line naming the file or option and
what to do, with the inputs unchanged and nothing left behind.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from fault_utils import assert_user_error, run_cli, snapshot

CROP = (slice(200, 264), slice(200, 264))


@pytest.fixture()
def folder(tmp_path, nuclei2d, nuclei2d_labels):
    tifffile.imwrite(tmp_path / "scan.tif", nuclei2d[CROP])
    tifffile.imwrite(tmp_path / "labels.tif", nuclei2d_labels[CROP])
    return tmp_path


def _refine(folder, checkpoint, labels, *extra):
    return run_cli(["refine", folder / "scan.tif", "--labels", labels, "--model", "vit_tiny",
                    "--checkpoint", checkpoint, "--out", folder / "out.tif", "--quiet",
                    *extra])


@pytest.mark.parametrize(("name", "data", "fragments"), [
    ("shape.tif", np.ones((10, 64), np.uint16), ("shape.tif", "(10, 64)", "labels shape")),
    ("halves.tif", np.full((64, 64), 1.5, np.float32), ("halves.tif", "whole-number ids")),
    ("negative.tif", np.full((64, 64), -3, np.int16), ("negative.tif", "negative ids")),
    ("empty.tif", np.zeros((64, 64), np.uint16), ("empty.tif", "no objects")),
])
def test_damaged_labels_are_one_line(folder, tiny_checkpoint, name, data, fragments):
    tifffile.imwrite(folder / name, data)
    before = snapshot(folder)
    outcome = _refine(folder, tiny_checkpoint, folder / name)
    assert_user_error(outcome, *fragments)
    assert snapshot(folder) == before


def test_missing_labels_and_labels_as_output(folder, tiny_checkpoint):
    before = snapshot(folder)
    assert_user_error(_refine(folder, tiny_checkpoint, folder / "gone.tif"), "gone.tif")
    outcome = run_cli(["refine", folder / "scan.tif", "--labels", folder / "labels.tif",
                       "--model", "vit_tiny", "--checkpoint", tiny_checkpoint, "--out",
                       folder / "labels.tif", "--overwrite"])
    assert_user_error(outcome, "labels.tif", "never writes over its input")
    assert snapshot(folder) == before


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--score-threshold", "2"], "--score-threshold: must be from -1 to 1"),
    (["--score-threshold", "nan"], "--score-threshold: 'nan' is not a finite number"),
    (["--iou-threshold", "-0.1"], "--iou-threshold: must be from 0 to 1"),
    (["--prompt-batch", "0"], "--prompt-batch: must be at least 1"),
])
def test_bad_options_are_one_line(folder, tiny_checkpoint, extra, fragment):
    assert_user_error(_refine(folder, tiny_checkpoint, folder / "labels.tif", *extra), fragment)


def test_evaluate_predicted_faults(folder, tiny_checkpoint):
    tifffile.imwrite(folder / "small.tif", np.ones((32, 32), np.uint16))
    base = ["evaluate", "--image", folder / "scan.tif", "--labels", folder / "labels.tif"]
    assert_user_error(run_cli([*base, "--predicted", folder / "small.tif"]),
                      "predicted labels", "(32, 32)")
    assert_user_error(run_cli([*base, "--predicted", folder / "none.tif"]), "none.tif")
    assert_user_error(run_cli([*base, "--predicted", folder / "labels.tif", "--adapter",
                               tiny_checkpoint]), "--adapter", "--predicted")
    assert_user_error(run_cli(base), "give --model", "--predicted")
