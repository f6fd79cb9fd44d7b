"""``hqsam segment|auto|embed`` over a folder or glob of images (random-weight vit_tiny).

Each image gives what a single-image run gives it; lines come in natural name order;
a killed run's rerun does only the images without an output; Dask workers give the
same outputs as one process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.cli import main
from napari_hq_sam.engine.everything import segment_everything

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("plate_2", "plate_10", "well")  # natural order: 2 before 10
LINE = re.compile(r"^(\S+): (\d+) objects?, (\d+) slices?, [\d.]+ s -> (.+)$")
FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _model(checkpoint) -> list:
    return ["--model", "vit_tiny", "--checkpoint", checkpoint, "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def plates(tmp_path_factory, nuclei2d) -> Path:
    """``images/``: three 64 x 64 crops of the nuclei image (plus a hidden file and a
    text file, both ignored); ``prompts/``: a JSON file, a points + boxes CSV pair and
    a file named after no image."""
    root = tmp_path_factory.mktemp("plates")
    images, prompts = root / "images", root / "prompts"
    images.mkdir()
    prompts.mkdir()
    for i, name in enumerate(NAMES):
        tifffile.imwrite(images / f"{name}.tif", nuclei2d[128 * i:128 * i + 64, 64:128])
    tifffile.imwrite(images / ".hidden.tif", nuclei2d[:64, :64])
    (images / "notes.txt").write_text("not an image")
    (prompts / "plate_2.json").write_text(json.dumps(
        {"prompts": [{"box": [8, 8, 40, 40]}, {"points": [[50, 50]], "object": 2}]}))
    # napari CSV exports: axis-0 is Y, axis-1 is X; both files are one prompt set
    (prompts / "plate_10_points.csv").write_text(
        "index,axis-0,axis-1,label,object\n0,20.0,30.0,positive,1\n1,50.0,12.0,positive,2\n")
    (prompts / "plate_10_boxes.csv").write_text(
        "index,shape-type,vertex-index,axis-0,axis-1\n"
        "0,rectangle,0,5.0,5.0\n0,rectangle,1,5.0,25.0\n"
        "0,rectangle,2,30.0,25.0\n0,rectangle,3,30.0,5.0\n")
    (prompts / "well.json").write_text(json.dumps({"prompts": [{"box": [20, 10, 60, 44]}]}))
    (prompts / "plate_3.json").write_text(json.dumps({"prompts": [{"box": [1, 1, 9, 9]}]}))
    return root


def _segment_argv(root: Path, checkpoint, out, images=None, *extra) -> list:
    return ["segment", images or root / "images", "--prompts", root / "prompts",
            *_model(checkpoint), "--out", out, *extra]


@pytest.fixture(scope="module")
def clean_run(plates, tiny_checkpoint, tmp_path_factory):
    """One uninterrupted folder run: ``(out folder, stdout, stderr)``."""
    out = tmp_path_factory.mktemp("clean") / "labels"  # created by the run
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in _segment_argv(plates, tiny_checkpoint, out)])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


def test_folder_lines_outputs_and_single_image_equality(plates, clean_run, tiny_checkpoint,
                                                        tmp_path, capsys):
    out, stdout, stderr = clean_run
    lines = stdout.splitlines()
    assert len(lines) == 4, stdout
    found = [LINE.match(line) for line in lines[:3]]
    assert all(found), stdout
    assert [m[1] for m in found] == [f"{n}.tif" for n in NAMES]
    assert [int(m[2]) for m in found] == [2, 3, 1]  # objects: JSON 2, CSV pair 3, one box
    assert [m[4] for m in found] == [str(out / f"{n}.tif") for n in NAMES]
    assert lines[3].startswith("total: 3 images, 3 segmented; 6 objects, 3 slices in ")
    assert lines[3].endswith(f"embeddings: 3 computed, 0 reused -> {out}")
    assert "plate_3.json" in stderr and "named after no image" in stderr
    labels = _labels(out)
    assert sorted(labels) == sorted(NAMES)  # the hidden image has no output
    for name, match in zip(NAMES, found):  # random weights: masks may hide one another
        assert labels[name].shape == (64, 64)
        assert 1 <= np.unique(labels[name]).size - 1 <= int(match[2])
    # one image alone, its two CSV files given by hand: the same labels
    code, single, err = _run(capsys, "segment", plates / "images" / "plate_10.tif",
                             "--prompts", plates / "prompts" / "plate_10_points.csv",
                             "--prompts", plates / "prompts" / "plate_10_boxes.csv",
                             *_model(tiny_checkpoint), "--out", tmp_path / "one.tif")
    assert code == 0, err
    assert np.array_equal(tifffile.imread(tmp_path / "one.tif"), labels["plate_10"])


def _start(root: Path, checkpoint, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "napari_hq_sam.cli",
            *map(str, _segment_argv(root, checkpoint, out))]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_killed_run_resumes(plates, clean_run, tiny_checkpoint, tmp_path, capsys):
    """kill -9 after the first image's output appears; the rerun does only the rest."""
    shutil.copytree(plates, tmp_path / "p")
    root, out = tmp_path / "p", tmp_path / "p" / "labels"
    process = _start(root, tiny_checkpoint, out)
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(out.glob("*.tif"))):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no output appeared in time"
        time.sleep(0.02)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    finished = sorted(p.stem for p in out.glob("*.tif"))
    assert "plate_2" in finished and len(finished) < 3
    code, stdout, err = _run(capsys, *_segment_argv(root, tiny_checkpoint, out))
    assert code == 0, err
    lines = stdout.splitlines()
    for name, line in zip(NAMES, lines):
        if name in finished:
            assert line == f"{name}.tif: done earlier -> {out / name}.tif"
        else:
            assert LINE.match(line) and line.startswith(f"{name}.tif: "), line
    assert lines[3].startswith(f"total: 3 images, {3 - len(finished)} segmented, "
                               f"{len(finished)} done earlier;")
    clean = _labels(clean_run[0])
    assert {n: a.tolist() for n, a in _labels(out).items()} == \
        {n: a.tolist() for n, a in clean.items()}
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # partial removed


def test_glob_auto_zarr_done_earlier_and_overwrite(plates, tiny_checkpoint, tiny_model,
                                                   tmp_path, capsys):
    images, out = plates / "images", tmp_path / "auto"
    argv = ["auto", f"{images}/plate_*.tif", *_model(tiny_checkpoint), *FAST, "--out", out,
            "--format", "zarr"]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    lines = stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["plate_2.tif", "plate_10.tif"]
    assert lines[2].startswith("total: 2 images, 2 segmented;")
    assert sorted(p.name for p in out.iterdir()) == ["plate_10.zarr", "plate_2.zarr"]
    stored = zarr.open_array(str(out / "plate_2.zarr"), mode="r")[...]
    config = AutoMaskConfig(points_per_side=4, pred_iou_thresh=0.0,
                            stability_score_thresh=0.0)
    expected = segment_everything(tiny_model, tifffile.imread(images / "plate_2.tif"),
                                  config).labels
    assert stored.any() and np.array_equal(stored, expected)
    # a rerun finds both done; --overwrite does them again (here the one the glob names)
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    assert stdout.splitlines()[:2] == [f"plate_2.tif: done earlier -> {out / 'plate_2.zarr'}",
                                       f"plate_10.tif: done earlier -> "
                                       f"{out / 'plate_10.zarr'}"]
    before = zarr.open_array(str(out / "plate_10.zarr"), mode="r")[...]
    argv[1] = f"{images}/plate_1*.tif"
    code, stdout, err = _run(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert stdout.splitlines()[0].startswith("plate_10.tif: ") and "done earlier" not in stdout
    assert np.array_equal(zarr.open_array(str(out / "plate_10.zarr"), mode="r")[...], before)


def test_embed_folder_into_one_cache(plates, tiny_checkpoint, tmp_path, capsys):
    cache = tmp_path / "emb.zarr"
    argv = ["embed", f"{plates / 'images'}/plate_*.tif", *_model(tiny_checkpoint),
            "--cache", cache]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    lines = stdout.splitlines()
    assert re.match(rf"plate_2.tif: 1 slice \(1 computed, 0 reused\), [\d.]+ s -> {cache}$",
                    lines[0]), lines
    assert lines[2].startswith("total: 2 images, 2 embedded; 2 slices in ")
    code, stdout, err = _run(capsys, *argv)  # stored: nothing computed again
    assert code == 0, err
    assert "embeddings: 0 computed, 2 reused" in stdout.splitlines()[2]
    # a single-image segment run finds its embedding in the folder
    code, stdout, err = _run(capsys, "segment", plates / "images" / "plate_10.tif",
                             "--prompts", plates / "prompts" / "plate_10_boxes.csv",
                             *_model(tiny_checkpoint), "--out", tmp_path / "s.tif",
                             "--cache", cache)
    assert code == 0, err
    assert "embeddings: 0 computed, 1 reused" in stdout


def test_dask_workers_one_task_per_image(plates, clean_run, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "dask"
    code, stdout, err = _run(capsys, *_segment_argv(
        plates, tiny_checkpoint, out, f"{plates / 'images'}/plate_*.tif", "--workers", 2))
    assert code == 0, err
    lines = stdout.splitlines()
    assert [LINE.match(line)[1] for line in lines[:2]] == ["plate_2.tif", "plate_10.tif"]
    assert "(2 local workers)" in lines[2] and lines[2].startswith("total: 2 images, 2 ")
    clean = _labels(clean_run[0])
    for name, labels in _labels(out).items():
        assert np.array_equal(labels, clean[name]), name
