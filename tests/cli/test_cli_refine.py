"""``hqsam refine`` on a real crop of the nuclei sample, then ``hqsam evaluate --predicted``."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile
import zarr

from napari_hq_sam.cli import main

CROP = (slice(200, 296), slice(200, 296))  # 8 nuclei, some touching


@pytest.fixture(scope="module")
def files(tmp_path_factory, nuclei2d, nuclei2d_labels):
    folder = tmp_path_factory.mktemp("refine")
    image, labels = folder / "nuclei.tif", folder / "stardist.tif"
    tifffile.imwrite(image, nuclei2d[CROP])
    tifffile.imwrite(labels, nuclei2d_labels[CROP])
    return folder, image, labels


def ids(labels) -> set[int]:
    return set(np.unique(labels).tolist()) - {0}


def test_refine_keeps_ids_and_reports_what_it_kept(files, tiny_checkpoint, capsys):
    folder, image, labels = files
    source = tifffile.imread(labels)
    before = labels.read_bytes()
    out = folder / "refined.tif"
    common = [image, "--labels", labels, "--model", "vit_tiny", "--checkpoint", tiny_checkpoint,
              "--device", "cpu", "--quiet"]
    assert main(["refine", *common, "--out", out, "--score-threshold", "-1",
                 "--iou-threshold", "0", "--point"]) == 0
    text = capsys.readouterr().out
    refined = tifffile.imread(out)
    assert refined.dtype == source.dtype and refined.shape == source.shape
    assert ids(refined) == ids(source)
    for object_id in ids(source):
        assert ((refined == object_id) & (source == object_id)).any()
    match = re.search(r"refined (\d+) of 8 objects on 1 slice, kept (\d+)", text)
    assert match and int(match[1]) + int(match[2]) == 8 and int(match[1]) > 0
    assert not np.array_equal(refined, source)
    assert f"wrote {out}: labels (96, 96) uint16" in text
    assert labels.read_bytes() == before

    # default thresholds: random weights lose every object, each listed with its reason
    zarr_out = folder / "kept.zarr"
    assert main(["refine", *common, "--out", zarr_out]) == 0
    text = capsys.readouterr().out
    np.testing.assert_array_equal(zarr.open_array(str(zarr_out))[...], source)
    assert "refined 0 of 8 objects on 1 slice, kept 8 (" in text
    listed = [line for line in text.splitlines() if line.startswith("  kept object ")]
    assert len(listed) == 8 and all("predicted IoU" in line for line in listed)
    assert "embeddings: 0 computed, 1 reused" in text  # same process: the model's cache
    assert not list(folder.glob("*.partial*")) and not list(folder.glob(".*"))

    # the refined labels scored against the source: instance metrics, no model
    assert main(["evaluate", "--image", image, "--labels", labels, "--predicted", out,
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_objects"] == scores["n_predicted"] == 8
    assert 0.0 <= scores["mSA"] <= scores["F1"] <= 1.0
    assert len(scores["slices"][0]["accuracies"]) == 10
    assert main(["evaluate", "--image", image, "--labels", labels, "--predicted",
                 zarr_out]) == 0
    table = capsys.readouterr().out
    assert "mSA" in table and table.strip().splitlines()[-1].split()[3:5] == ["1.0000",
                                                                              "1.0000"]


def test_refine_never_writes_over_its_labels(files, tiny_checkpoint, capsys):
    _, image, labels = files
    before = labels.read_bytes()
    assert main(["refine", image, "--labels", labels, "--model", "vit_tiny", "--checkpoint",
                 tiny_checkpoint, "--out", labels, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is the labels" in err and "never writes over its input" in err
    assert labels.read_bytes() == before
