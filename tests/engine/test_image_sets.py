"""Which images a folder or glob names, which prompt files and outputs are theirs."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_hq_sam.engine import image_sets
from napari_hq_sam.errors import InputError


def _touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"x")


def test_images_in_natural_order_hidden_and_other_files_left_out(tmp_path):
    _touch(tmp_path, "plate_10.tif", "plate_2.TIFF", "plate_1.npy", ".plate_0.tif", "a.txt")
    zarr.create_array(str(tmp_path / "scan.ome.zarr"), shape=(4, 4), dtype=np.uint8)
    (tmp_path / "sub").mkdir()
    _touch(tmp_path / "sub", "plate_3.tif")
    found = image_sets.list_images(tmp_path)
    assert [(m.path.name, m.name) for m in found] == [
        ("plate_1.npy", "plate_1"), ("plate_2.TIFF", "plate_2"), ("plate_10.tif", "plate_10"),
        ("scan.ome.zarr", "scan.ome")]
    matched = image_sets.list_images(f"{tmp_path}/**/plate_*.tif")
    assert [m.path.name for m in matched] == ["plate_3.tif", "plate_10.tif"]


def test_what_is_a_set(tmp_path):
    (tmp_path / "plates").mkdir()
    zarr.create_array(str(tmp_path / "scan.zarr"), shape=(4, 4), dtype=np.uint8)
    (tmp_path / "named.tif").mkdir()
    assert image_sets.is_image_set(tmp_path / "plates")
    assert image_sets.is_image_set(f"{tmp_path}/plates/*.tif")
    assert not image_sets.is_image_set(tmp_path / "scan.zarr")  # one image
    assert not image_sets.is_image_set(tmp_path / "named.tif")  # refused as one image
    assert not image_sets.is_image_set(tmp_path / "missing.tif")


def test_same_name_refused(tmp_path):
    _touch(tmp_path, "a.tif", "a.npy")
    with pytest.raises(InputError, match="same name 'a'"):
        image_sets.list_images(tmp_path)


def test_prompt_files_go_to_the_longest_name(tmp_path):
    images = [image_sets.SetImage(tmp_path / f"{n}.tif", n) for n in ("a", "a_2", "b")]
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    _touch(prompts, "a.json", "a_points.csv", "a_2.csv", "a_2_boxes.csv", "ab.csv",
           ".a.csv", "a.txt", "c.json")
    matched, unmatched = image_sets.match_prompt_files(images, prompts)
    assert {k: [p.name for p in v] for k, v in matched.items()} == {
        "a": ["a.json", "a_points.csv"], "a_2": ["a_2.csv", "a_2_boxes.csv"]}
    assert [p.name for p in unmatched] == ["ab.csv", "c.json"]


def test_outputs_and_done(tmp_path):
    out = image_sets.output_path(tmp_path, "a", "zarr")
    assert out == tmp_path / "a.zarr" and not image_sets.output_done(out)
    out.mkdir()
    assert not image_sets.output_done(out)  # a folder zarr did not write
    zarr.create_array(str(out), shape=(2, 2), dtype=np.uint8, overwrite=True)
    assert image_sets.output_done(out)
    tif = image_sets.output_path(tmp_path, "a", "tif")
    tif.write_bytes(b"")
    assert not image_sets.output_done(tif)
    tif.write_bytes(b"II*\0")
    assert image_sets.output_done(tif)
