"""Fault matrix, folders and globs of images (``hqsam segment|auto|embed FOLDER``).

A damaged image or a missing prompt file among good images: said on that image's
line (``skipped: <reason>``), the other images done, one error line, exit 2, no
partial output. Mistakes about the whole run (a folder or glob without images, an
output folder that is a file or the images' own folder, ``--out`` named like one
output, ``--prompts`` not a folder, two images of one name, ``--format`` for one
image, a cache that would join the images) are one line before any image is read;
nothing is created or changed. An interrupted run keeps the labels of the images it
finished and says so; the rerun does the rest.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tifffile
from fault_utils import assert_user_error, leftovers, run_cli, snapshot

MODEL = ["--model", "vit_tiny", "--device", "cpu", "--quiet"]
BOX = {"prompts": [{"box": [8, 8, 40, 40]}]}


@pytest.fixture()
def folder(tmp_path, nuclei2d):
    """``images/`` with ``a.tif`` and ``b.tif`` (64 x 64), ``prompts/`` with a file for each."""
    (tmp_path / "images").mkdir()
    (tmp_path / "prompts").mkdir()
    for i, name in enumerate("ab"):
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", nuclei2d[64 * i:64 * i + 64, :64])
        (tmp_path / "prompts" / f"{name}.json").write_text(json.dumps(BOX))
    return tmp_path


def _segment(folder, checkpoint, *extra, images=None, out=None) -> list:
    return ["segment", images or folder / "images", "--prompts", folder / "prompts", *MODEL,
            "--checkpoint", checkpoint, "--out", out or folder / "labels", *extra]


def _refused(argv, folder, *fragments) -> str:
    """One line naming ``fragments``, exit 2; nothing under ``folder`` created or changed."""
    before = snapshot(folder)
    names = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    line = assert_user_error(run_cli(argv), *fragments)
    assert snapshot(folder) == before
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == names
    return line


def test_damaged_image_and_missing_prompts_among_good_ones(folder, tiny_checkpoint):
    images = folder / "images"
    data = (images / "b.tif").read_bytes()
    (images / "b.tif").write_bytes(data[:len(data) // 2])  # truncated
    shutil.copy(images / "a.tif", images / "c.tif")  # no prompts/c.*
    inputs = snapshot(images)
    outcome = run_cli(_segment(folder, tiny_checkpoint))
    line = assert_user_error(outcome, "2 of 3 images not done (b, c)")
    assert line.startswith("hqsam segment: error:")
    lines = outcome.stdout.splitlines()
    assert lines[0].startswith("a.tif: 1 object, 1 slice, ") and lines[0].endswith(
        f"-> {folder / 'labels' / 'a.tif'}")
    assert lines[1].startswith(f"b.tif: skipped: cannot read image {images / 'b.tif'}")
    assert "truncated or damaged" in lines[1]
    assert lines[2] == (f"c.tif: skipped: no prompt file for it in {folder / 'prompts'} "
                        "(looked for c.csv, c.json, c_*.csv, c_*.json)")
    assert lines[3].startswith("total: 3 images, 1 segmented, 2 failed (exit status 2);")
    assert sorted(os.listdir(folder / "labels")) == ["a.tif"]
    assert tifffile.imread(folder / "labels" / "a.tif").any()
    assert snapshot(images) == inputs and leftovers(folder) == []


@pytest.mark.parametrize("command", ["segment", "auto", "embed"])
def test_folder_or_glob_without_images(command, folder, tiny_checkpoint):
    empty = folder / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    (empty / ".hidden.tif").write_bytes((folder / "images" / "a.tif").read_bytes())
    extra = (["--cache", folder / "emb.zarr"] if command == "embed" else
             ["--out", folder / "labels"])
    prompts = ["--prompts", folder / "prompts"] if command == "segment" else []
    _refused([command, empty, *prompts, *MODEL, "--checkpoint", tiny_checkpoint, *extra],
             folder, f"folder {empty} holds no images", "only 1 other file, e.g. notes.txt")
    _refused([command, f"{folder}/images/*.npy", *prompts, *MODEL, "--checkpoint",
              tiny_checkpoint, *extra], folder, f"'{folder}/images/*.npy' matches no images")


def test_output_folder_that_is_a_file(folder, tiny_checkpoint):
    (folder / "labels").write_bytes(b"keep me")
    _refused(_segment(folder, tiny_checkpoint), folder, f"--out {folder / 'labels'} is a file",
             "choose another --out")
    _refused(_segment(folder, tiny_checkpoint, out=folder / "labels" / "inner"), folder,
             "is a file", "choose another --out")


@pytest.mark.parametrize("out, fragment", [
    ("labels.tif", "is the folder their labels go to"),
    ("labels.zarr", "not a .zarr output"),
    ("images", "is the folder of the images"),
    (".", "holds the image"),
])
def test_output_folder_named_like_an_output_or_the_images(out, fragment, folder,
                                                          tiny_checkpoint):
    _refused(_segment(folder, tiny_checkpoint, out=folder / out), folder, fragment)


def test_prompts_not_a_folder(folder, tiny_checkpoint):
    argv = _segment(folder, tiny_checkpoint)
    argv[argv.index("--prompts") + 1] = folder / "prompts" / "a.json"
    _refused(argv, folder, f"--prompts {folder / 'prompts' / 'a.json'} is a file",
             "NAME.csv or NAME.json for image NAME")
    argv[argv.index("--prompts") + 1] = folder / "missing"
    _refused(argv, folder, "does not exist")
    _refused([*_segment(folder, tiny_checkpoint), "--prompts", folder / "prompts"], folder,
             "give --prompts once")


def test_two_images_of_one_name(folder, tiny_checkpoint):
    np.save(folder / "images" / "a.npy", np.zeros((8, 8), np.uint8))
    _refused(_segment(folder, tiny_checkpoint), folder, "have the same name 'a'",
             "rename one")


def test_format_for_one_image(folder, tiny_checkpoint):
    _refused(_segment(folder, tiny_checkpoint, "--format", "zarr",
                      images=folder / "images" / "a.tif", out=folder / "a.tif"),
             folder, "--format applies to a folder of images")


def test_cache_in_the_images_folder(folder, tiny_checkpoint):
    _refused(["embed", folder / "images", *MODEL, "--checkpoint", tiny_checkpoint, "--cache",
              folder / "images" / "emb.zarr"], folder, "lies in the folder of the images")


def test_missing_checkpoint_creates_no_output_folder(folder):
    _refused(_segment(folder, folder / "missing.pth", out=folder / "new" / "labels"), folder,
             f"{folder / 'missing.pth'} does not exist")


def test_interrupted_run_keeps_finished_images(folder, tiny_checkpoint, monkeypatch):
    """Ctrl-C during the second image: one line, exit 130, the first image's labels kept,
    no partial output; the rerun does only the second."""
    from napari_hq_sam.commands import _image_sets

    real = _image_sets._image

    def second_interrupted(command, args):
        if args.image.endswith("b.tif"):
            raise KeyboardInterrupt
        return real(command, args)

    monkeypatch.setattr(_image_sets, "_image", second_interrupted)
    outcome = run_cli(_segment(folder, tiny_checkpoint))
    line = assert_user_error(outcome, code=130)
    assert line == (f"hqsam: interrupted; the labels of finished images stay in "
                    f"{folder / 'labels'}: the same command does the rest")
    assert outcome.stdout.splitlines()[0].startswith("a.tif: 1 object")
    assert sorted(os.listdir(folder / "labels")) == ["a.tif"] and leftovers(folder) == []
    monkeypatch.setattr(_image_sets, "_image", real)
    outcome = run_cli(_segment(folder, tiny_checkpoint))
    assert outcome.code == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert lines[0] == f"a.tif: done earlier -> {folder / 'labels' / 'a.tif'}"
    assert lines[1].startswith("b.tif: 1 object, 1 slice, ")
