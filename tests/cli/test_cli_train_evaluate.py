"""``hqsam train`` then ``hqsam evaluate --adapter`` on the two halves of a real image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_hq_sam
from napari_hq_sam.adapters import read_adapter
from napari_hq_sam.cli import main

SAMPLE = Path(napari_hq_sam.__file__).parent / "_sample_data"
IMAGE, LABELS = str(SAMPLE / "nuclei2d_image.tif"), str(SAMPLE / "nuclei2d_labels.tif")
# small windows of the left and right halves keep the test fast
LEFT, RIGHT = ":96,:96", ":96,256:352"


def _json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_then_evaluate_with_adapter(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "nuclei.pt"
    assert main(["train", "--image", IMAGE, "--labels", LABELS, "--crop", LEFT,
                 "--model", "vit_tiny", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                 "--steps", "2", "--batch-size", "2", "--val-fraction", "0", "--device", "cpu",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "held-out mIoU" in text and f"adapter written: {out}" in text
    adapter = read_adapter(out)
    assert out.stat().st_size < 8 * 2**20 and len(adapter.state_dict) == 25
    assert adapter.training["steps"] == 2 and adapter.training["crop"] == LEFT
    # no held-out objects: the last step is kept (with them, the best held-out step)
    assert adapter.metrics["steps_done"] == 2 and adapter.metrics["best_step"] == 2
    left = tifffile.imread(LABELS)[:96, :96]
    assert adapter.metrics["n_val_objects"] == 0
    assert adapter.metrics["n_train_objects"] == len(np.unique(left[left > 0]))

    right = tifffile.imread(LABELS)[:96, 256:352]
    n_objects = len(np.unique(right[right > 0]))
    base = ["evaluate", "--image", IMAGE, "--labels", LABELS, "--crop", RIGHT,
            "--model", "vit_tiny", "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
            "--json", "--per-object"]
    tuned = _json(capsys, [*base, "--adapter", str(out)])
    plain = _json(capsys, base)
    for result in (tuned, plain):
        assert result["n_objects"] == n_objects == len(result["objects"])
        ious = [o["iou"] for o in result["objects"]]
        assert result["mIoU"] == pytest.approx(np.mean(ious))
        assert result["mBIoU"] == pytest.approx(np.mean([o["boundary_iou"] for o in
                                                         result["objects"]]))
        assert sorted(o["label"] for o in result["objects"]) == sorted(
            int(k) for k in np.unique(right[right > 0]))
    # the adapter changed the HQ branch, so the masks (and scores) differ
    assert [o["iou"] for o in tuned["objects"]] != [o["iou"] for o in plain["objects"]]


def test_user_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    assert main(["evaluate", "--image", IMAGE, "--labels", LABELS, "--crop", "0:10",
                 "--model", "vit_tiny", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "--crop '0:10': give Y0:Y1,X0:X1" in capsys.readouterr().err
    existing = tmp_path / "a.pt"
    existing.write_bytes(b"")
    assert main(["train", "--image", IMAGE, "--labels", LABELS, "--model", "vit_tiny",
                 "--checkpoint", str(tiny_checkpoint), "--out", str(existing)]) == 2
    assert "exists; use --overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--image", IMAGE, "--labels", LABELS, "--model", "vit_tiny",
                 "--checkpoint", str(tiny_checkpoint), "--adapter", str(existing)]) == 2
    assert "not a readable adapter" in capsys.readouterr().err


def test_table_output(tiny_checkpoint, capsys):
    assert main(["evaluate", "--image", IMAGE, "--labels", LABELS, "--crop", ":48,:48",
                 "--model", "vit_tiny", "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    crop = tifffile.imread(LABELS)[:48, :48]
    n = len(np.unique(crop[crop > 0]))
    assert lines[1].split() == ["slice", "objects", "mIoU", "mBIoU"]
    assert lines[-1].split()[:2] == ["all", str(n)]
