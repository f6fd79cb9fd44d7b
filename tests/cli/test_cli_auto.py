"""``hqsam auto`` and the Dask path of automatic segmentation (random-weight vit_tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.cli import main
from napari_hq_sam.engine.distributed import ModelSpec, segment_everything_distributed
from napari_hq_sam.engine.everything import segment_everything

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-thresh", "0",
        "--quiet"]
CFG = AutoMaskConfig(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def small_stack(nuclei3d):
    return nuclei3d[15:17, :48, :48]


def test_cli_writes_labels_for_a_stack(tmp_path, tiny_checkpoint, small_stack, tiny_model,
                                       capsys):
    image = tmp_path / "stack.tif"
    tifffile.imwrite(image, small_stack)
    out = tmp_path / "labels.tif"
    argv = ["auto", str(image), "--model", "vit_tiny", "--checkpoint", str(tiny_checkpoint),
            "--out", str(out), "--device", "cpu", *FAST]
    assert main(argv) == 0
    labels = tifffile.imread(out)
    assert labels.shape == small_stack.shape and labels.dtype == np.uint32
    ids = np.unique(labels[labels > 0])
    assert ids.size >= 2 and ids.tolist() == list(range(1, ids.size + 1))
    expected = segment_everything(tiny_model, small_stack, CFG).labels
    assert np.array_equal(labels, expected)
    assert "wrote" in capsys.readouterr().out
    # an existing output is refused (exit 2, one line), and so is a missing image
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["auto", str(tmp_path / "none.tif"), "--model", "vit_tiny", "--out",
                 str(tmp_path / "x.tif")]) == 2


def test_dask_run_equals_single_process(tiny_checkpoint, tiny_model, small_stack):
    spec = ModelSpec("vit_tiny", str(tiny_checkpoint), "cpu")
    done = []
    run = segment_everything_distributed(small_stack, spec, CFG, n_workers=1,
                                         processes=False, stitch=True,
                                         progress=lambda d, t: done.append((d, t)))
    single = segment_everything(tiny_model, small_stack, CFG, stitch=True)
    assert np.array_equal(run.labels, single.labels)
    assert run.slices == [(0,), (1,)] and done[-1] == (2, 2)
