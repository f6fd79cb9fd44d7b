"""``hqsam segment``: the README example on the bundled sample, Dask workers, bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_hq_sam.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "napari_hq_sam" / "_sample_data"
IMAGE = SAMPLE / "nuclei3d_image.tif"
BOXES = SAMPLE / "nuclei3d_boxes.csv"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _embeddings(out: str) -> tuple[int, int]:
    found = re.search(r"embeddings: (\d+) computed, (\d+) reused", out)
    return int(found[1]), int(found[2])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli") / "emb.zarr"


def _base(tiny_checkpoint, out, cache_dir, *extra):
    return ["segment", IMAGE, "--prompts", BOXES, "--model", "vit_tiny", "--checkpoint",
            tiny_checkpoint, "--out", out, "--cache", cache_dir, "--quiet", *extra]


def test_readme_example_then_workers_identical(tiny_checkpoint, cache_dir, tmp_path, capsys,
                                               nuclei3d):
    code, out, err = _run(capsys, *_base(tiny_checkpoint, tmp_path / "out.tif", cache_dir))
    assert code == 0, err
    assert "segmented 2 slices, 3 objects" in out and _embeddings(out) == (2, 0)
    labels = tifffile.imread(tmp_path / "out.tif")
    assert labels.shape == nuclei3d.shape
    assert np.flatnonzero(labels.any(axis=(1, 2))).tolist() == [10, 20]  # the boxed slices
    assert set(np.unique(labels[10])) - {0} <= {1, 2} and set(np.unique(labels[20])) == {0, 3}
    # two Dask worker processes, each loading the model once, reading the same cache
    code, out, err = _run(capsys, *_base(tiny_checkpoint, tmp_path / "w.tif", cache_dir,
                                         "--workers", 2))
    assert code == 0, err
    assert "2 local workers" in out and _embeddings(out) == (0, 2)
    assert np.array_equal(tifffile.imread(tmp_path / "w.tif"), labels)
    # joining a running scheduler (here an in-process one)
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        code, out, err = _run(capsys, *_base(tiny_checkpoint, tmp_path / "s.tif", cache_dir,
                                             "--scheduler", cluster.scheduler_address))
    assert code == 0, err
    assert f"scheduler {cluster.scheduler_address}" in out and _embeddings(out) == (0, 2)
    assert np.array_equal(tifffile.imread(tmp_path / "s.tif"), labels)
    # zarr output, JSON prompts: object 3 as a JSON box gives the same pixels
    (tmp_path / "p.json").write_text(json.dumps(
        {"prompts": [{"slice": [20], "box": [26, 14, 48, 34], "object": 3}]}))
    code, out, err = _run(capsys, "segment", IMAGE, "--prompts", tmp_path / "p.json",
                          "--model", "vit_tiny", "--checkpoint", tiny_checkpoint,
                          "--out", tmp_path / "o.zarr", "--cache", cache_dir, "--quiet")
    assert code == 0, err
    assert _embeddings(out) == (0, 1)
    stored = zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[...]
    assert np.array_equal(stored, np.where(labels == 3, 3, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr", "out.tif", "p.json", "s.tif",
                                                          "w.tif"]


def _bad_files(tmp, nuclei3d):
    # box 2 moved wholly right of the 57-wide image (one only partly outside is clipped)
    (tmp / "outside.csv").write_text(BOXES.read_text().replace("48.0", "480.0")
                                     .replace("26.0", "260.0"))
    (tmp / "noslice.csv").write_text(BOXES.read_text().replace("20.0,", "40.0,"))
    (tmp / "empty.csv").write_text("")
    (tmp / "typo.csv").write_text("index,axis-0,axis-1,axis-2,lable\n0,10,5,5,positive\n")
    nan = nuclei3d.astype(np.float32)
    nan[10, 5, 5] = np.nan
    tifffile.imwrite(tmp / "nan.tif", nan)
    np.save(tmp / "five.npy", np.stack([np.stack([nuclei3d[:2]] * 2)] * 2))  # (2,2,2,61,57)
    (tmp / "exists.tif").write_bytes(b"keep me")


@pytest.mark.parametrize("image, prompts, out, message", [
    (IMAGE, "outside.csv", "o.tif", "wholly outside the image"),
    (IMAGE, "noslice.csv", "o.tif", r"slice \(40,\) does not exist"),
    (IMAGE, "empty.csv", "o.tif", "is empty"),
    (IMAGE, "typo.csv", "o.tif", r"unknown columns \['lable'\]"),
    ("nan.tif", BOXES, "o.tif", "NaN or infinite"),
    ("five.npy", BOXES, "o.tif", "axis hint"),
    (IMAGE, BOXES, "exists.tif", "already exists: pass --overwrite"),
    (IMAGE, "missing.csv", "o.tif", "does not exist"),
])
def test_bad_input_is_refused_and_nothing_written(tmp_path, capsys, nuclei3d, tiny_checkpoint,
                                                  image, prompts, out, message):
    _bad_files(tmp_path, nuclei3d)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(capsys, "segment", tmp_path / image, "--prompts", tmp_path / prompts,
                        "--model", "vit_tiny", "--checkpoint", tiny_checkpoint,
                        "--out", tmp_path / out, "--quiet")
    assert code == 2
    assert err.startswith("hqsam segment: error:") and re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing new, nothing partial
    assert (tmp_path / "exists.tif").read_bytes() == b"keep me"


def test_cache_of_another_model_is_refused(tmp_path, capsys, tiny_checkpoint):
    from napari_hq_sam.engine.cache import EmbeddingCache

    signature = {"model_type": "vit_b", "checkpoint_sha256": "0" * 64, "adapter_sha256": None,
                 "precision": "fp32", "version": "0.0.1"}
    EmbeddingCache(signature, directory=tmp_path / "old.zarr")
    code, _, err = _run(capsys, *_base(tiny_checkpoint, tmp_path / "o.zarr", tmp_path / "old.zarr"))
    assert code == 2 and "holds embeddings of another model or version" in err
    assert "model_type: vit_b in the cache vs vit_tiny now" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr"]  # no output, no partial
