"""Fault matrix, prompt files: every value is checked as the file is read, before the model.

A bad prompt file ends in one line naming the file, the CSV line or JSON entry (from
0) and what is expected; the run passes a checkpoint that does not exist, so the
prompt error showing proves the prompts were checked before any model work. Boxes
dragged past the image edge (napari lets a rectangle start outside the image) are
clipped to it, said once; only prompts wholly outside are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fault_utils import assert_user_error, leftovers, run_cli, snapshot

SHAPES = "index,shape-type,vertex-index,axis-0,axis-1,axis-2\n"
POINTS = "index,axis-0,axis-1,axis-2,label,object\n"


def _rectangle(index: int, z: int, y0, x0, y1, x1) -> str:
    """napari's CSV rows of one rectangle (four vertices) on slice ``z``."""
    corners = [(y0, x0), (y0, x1), (y1, x1), (y1, x0)]
    return "".join(f"{index},rectangle,{k},{z},{y},{x}\n" for k, (y, x) in enumerate(corners))


def _json(*entries) -> str:
    return json.dumps({"prompts": list(entries)})


BOX = [20, 20, 40, 40]

# name -> (file content, fragments of the one-line error besides the file name)
CASES = {
    # item 3: values checked as the file is read
    "id_too_large.csv": (POINTS + "0,1,30,30,positive,1e300\n",
                         ["line 2", "object '1e300' is too large", "4294967295"]),
    "id_too_large.json": (_json({"slice": [1], "box": BOX, "object": 2**40}),
                          ["entry 0", "object 1099511627776 is too large"]),
    "id_zero.json": (_json({"slice": [1], "box": BOX, "object": 0}),
                     ["entry 0", "not positive", "0 is the background"]),
    "id_negative.csv": (POINTS + "0,1,30,30,positive,7\n1,1,31,31,positive,-3\n",
                        ["line 3", "object '-3' is not positive"]),
    "coordinate_nan.csv": (POINTS + "0,1,nan,30,positive,\n", ["line 2", "axis-1 is 'nan'",
                                                                "finite"]),
    "coordinate_text.csv": (SHAPES + _rectangle(0, 1, 5, 5, 9, 9).replace(",9\n", ",9px\n", 1),
                            ["line 3", "axis-2 is '9px', not a number"]),
    "coordinate_inf.json": (_json({"slice": [1], "points": [[float("inf"), 3]]}),
                            ["entry 0", "point 0 must hold finite numbers"]),
    "coordinate_overflow.json": ('[{"slice": [1], "box": [1, 2, 1e400, 9]}]',
                                 ["entry 0", "'box' must hold finite numbers"]),
    "label_unknown.csv": (POINTS + "0,1,30,30,maybe,\n",
                          ["line 2", "label 'maybe' is neither positive/negative nor 1/0"]),
    "label_two.json": (_json({"slice": [1], "points": [[3, 4]], "labels": [2]}),
                       ["entry 0", "label 2 is neither"]),
    "labels_count.json": (_json({"slice": [1], "points": [[3, 4]], "labels": [1, 0]}),
                          ["entry 0", "1 points but 2 labels"]),
    # item 4: ragged rows and wrong types: one line, no traceback
    "ragged_short.csv": (SHAPES + "0,rectangle,0,1,5,5\n0,rectangle,1,1\n",
                         ["line 3", "4 values but the header has 6 columns"]),
    "ragged_long.csv": (POINTS + "0,1,30,30,positive,,extra\n",
                        ["line 2", "7 values but the header has 6 columns"]),
    "slice_number.json": (_json({"slice": 10, "box": BOX}),
                          ["entry 0", "'slice' must be a list of whole numbers", "got 10"]),
    "slice_fraction.json": (_json({"slice": [1], "box": BOX}, {"slice": [1.5], "box": BOX}),
                            ["entry 1", "'slice' must hold whole numbers, got 1.5"]),
    "slice_lengths.json": (_json({"slice": [1], "box": BOX}, {"slice": [0, 1], "box": BOX}),
                           ["entry 1", "'slice' has 2 values but entry 0's has 1"]),
    "object_list.json": (_json({"slice": [1], "box": BOX, "object": [1]}),
                         ["entry 0", "object [1] is neither a whole number", "nor a name"]),
    "object_dict.json": (_json({"slice": [1], "box": BOX, "object": {}}),
                         ["entry 0", "object {} is neither a whole number"]),
    "box_text.json": (_json({"slice": [1], "box": "20,20,40,40"}),
                      ["entry 0", "'box' must be [x0, y0, x1, y1] (4 numbers)"]),
    "box_short.json": (_json({"slice": [1], "box": [1, 2, 3]}), ["entry 0", "(4 numbers)"]),
    "points_flat.json": (_json({"slice": [1], "points": [30, 8]}),
                         ["entry 0", "'points' must be a list of [x, y] pairs"]),
    "point_bool.json": (_json({"slice": [1], "points": [[True, 8]]}),
                        ["entry 0", "point 0 must be [x, y] (2 numbers), got [true, 8]"]),
    "entry_number.json": ("[5]", ["entry 0", "expected an object such as"]),
    "entry_unknown_key.json": (_json({"slice": [1], "box": BOX, "lables": [1]}),
                               ["entry 0", "unknown keys ['lables']"]),
    "entry_empty.json": (_json({"slice": [1], "points": []}),
                         ["entry 0", "expected 'points' (a list of [x, y] pairs) and/or 'box'"]),
    "not_a_list.json": ('{"prompts": {"slice": [1]}}', ["must hold a list of prompts"]),
    "broken.json": ('[{"slice": [1], "box": [1, 2, 3, 4]', ["is not valid JSON"]),
    "axis_names.csv": ("index,axis-0,axis-x\n0,1,2\n", ["needs columns axis-0, axis-1"]),
    "columns_twice.csv": ("index,axis-0,axis-1,label,label\n0,1,2,1,1\n",
                          ["repeated columns ['label']"]),
    # item 5: nonsense is refused, never silently accepted
    "box_flat.json": (_json({"slice": [1], "box": [20, 20, 20, 40]}),
                      ["entry 0", "has no area (x0 == x1 or y0 == y1)"]),
    "box_inverted.json": (_json({"slice": [1], "box": [40, 20, 20, 40]}),
                          ["entry 0", "'box' [40, 20, 20, 40] is inverted"]),
    "rectangle_flat.csv": (SHAPES + _rectangle(0, 1, 5, 5, 9, 9) + _rectangle(1, 1, 9, 5, 9, 20),
                           ["line 6", "shape 1 has no area (x 5 to 20, y 9 to 9)"]),
    "ellipse.csv": (SHAPES + _rectangle(0, 1, 5, 5, 9, 9).replace("rectangle", "ellipse"),
                    ["line 2", "shape 0 is an ellipse: only rectangles are box prompts"]),
    "id_fraction.json": (_json({"slice": [1], "box": BOX, "object": 1.5}),
                         ["entry 0", "object 1.5 is not a whole number"]),
    "id_fraction.csv": (POINTS + "0,1,30,30,positive,1.5\n",
                        ["line 2", "object '1.5' is not a whole number"]),
}

# Checked against the image (after reading, still before the model): no file name.
IMAGE_CASES = {
    "box_outside.json": (_json({"slice": [1], "box": [60, 3, 80, 20], "object": 2}),
                         [r"the box of object 2 on slice (1,) lies wholly outside the image",
                          "slices are 57 wide and 61 high"]),
    "point_outside.csv": (POINTS + "0,1,30,30,positive,\n1,1,30,57.2,positive,\n",
                          ["a point of object 1 on slice (1,) lies outside the image",
                           "x=57.2, y=30"]),
    "slice_missing.json": (_json({"slice": [3], "box": BOX}),
                           ["slice (3,) does not exist", "slice axes have shape (3,)"]),
    "slice_axes.json": (_json({"box": BOX}), ["has slice index () but the image has 1 slice "
                                              "axes"]),
}


@pytest.fixture
def inputs(tmp_path, nuclei3d) -> Path:
    """A folder with a (3, 61, 57) crop of the nuclei stack as ``image.tif``."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "image.tif", nuclei3d[9:12])
    return folder


def _segment(inputs: Path, out: Path, *prompts, checkpoint="never.pth", extra=()):
    argv = ["segment", inputs / "image.tif", "--model", "vit_tiny", "--checkpoint", checkpoint,
            "--out", out, "--quiet", *extra]
    for p in prompts:
        argv += ["--prompts", p]
    return run_cli(argv)


def _refused(inputs: Path, tmp_path: Path, name: str, content: str | bytes, fragments):
    path = inputs / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    before = snapshot(inputs)
    out = tmp_path / "out" / "labels.tif"
    out.parent.mkdir()
    line = assert_user_error(_segment(inputs, out, path), *fragments)
    assert line.startswith("hqsam segment: error: ")
    assert "never.pth" not in line  # the prompts were checked before the model's files
    assert snapshot(inputs) == before
    assert list(out.parent.iterdir()) == [] and leftovers(inputs) == []
    return line


@pytest.mark.parametrize("name", CASES)
def test_bad_prompt_file_is_one_line_naming_it(inputs, tmp_path, name):
    content, fragments = CASES[name]
    _refused(inputs, tmp_path, name, content, [f"prompt file {inputs / name}", *fragments])


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_prompt_off_the_image_is_one_line(inputs, tmp_path, name):
    content, fragments = IMAGE_CASES[name]
    _refused(inputs, tmp_path, name, content, fragments)


@pytest.mark.parametrize("name, content, fragments", [
    ("latin1.csv", POINTS.encode() + "0,1,30,30,positiv\xe9,\n".encode("latin-1"),
     ["is not UTF-8 text"]),
    ("zip.json", b"PK\x03\x04\x00\xff\xfe", ["is not UTF-8 text"]),
])
def test_binary_prompt_file_is_one_line(inputs, tmp_path, name, content, fragments):
    _refused(inputs, tmp_path, name, content, [f"prompt file {inputs / name}", *fragments])


def test_prompt_folder_and_other_suffix_are_one_line(inputs, tmp_path):
    (inputs / "prompts.csv").mkdir()
    (inputs / "prompts.txt").write_text(POINTS + "0,1,30,30,positive,\n")
    out = tmp_path / "o.tif"
    assert_user_error(_segment(inputs, out, inputs / "prompts.csv"),
                      f"prompt file {inputs / 'prompts.csv'} is a folder")
    assert_user_error(_segment(inputs, out, inputs / "prompts.txt"),
                      f"prompt file {inputs / 'prompts.txt'} is neither .csv")
    assert not out.exists()


def test_files_of_images_with_other_axes_name_both(inputs, tmp_path):
    (inputs / "a.csv").write_text(POINTS + "0,1,30,30,positive,\n")
    (inputs / "b.csv").write_text("index,axis-0,axis-1\n0,30,30\n")
    assert_user_error(_segment(inputs, tmp_path / "o.tif", inputs / "a.csv", inputs / "b.csv"),
                      f"prompt file {inputs / 'b.csv'} has 0 slice axes per point but "
                      f"{inputs / 'a.csv'} has 1")


def test_two_boxes_of_one_object_name_the_files(inputs, tmp_path):
    (inputs / "a.json").write_text(_json({"slice": [1], "box": BOX, "object": 4}))
    (inputs / "b.json").write_text(_json({"slice": [1], "box": [1, 1, 9, 9], "object": 4}))
    assert_user_error(_segment(inputs, tmp_path / "o.tif", inputs / "a.json", inputs / "b.json"),
                      f"prompt files {inputs / 'a.json'}, {inputs / 'b.json'}: object 4 has two "
                      "boxes on slice (1,)")


def test_boxes_past_the_edge_are_clipped_and_said_once(inputs, tmp_path, tiny_checkpoint,
                                                       nuclei3d_labels):
    """Rectangles saved from a napari Shapes layer, dragged from outside the image around
    nuclei at the left and bottom borders, segment as if drawn up to the edge."""
    rows, cols = np.nonzero(nuclei3d_labels[10] == nuclei3d_labels[10, 37, 5])
    assert cols.min() == 0  # a nucleus at the left border of the prompted slice
    (inputs / "past.csv").write_text(
        SHAPES + _rectangle(0, 1, rows.min() - 2, -9.0, rows.max() + 2, cols.max() + 2)
        + _rectangle(1, 1, 45.0, 30.0, 75.0, 50.0))  # bottom edge: y 60.5
    (inputs / "edge.csv").write_text(
        SHAPES + _rectangle(0, 1, rows.min() - 2, -0.5, rows.max() + 2, cols.max() + 2)
        + _rectangle(1, 1, 45.0, 30.0, 60.5, 50.0))
    cache = tmp_path / "cache.zarr"
    before = snapshot(inputs)
    extra = ("--cache", cache)
    past = _segment(inputs, tmp_path / "past.tif", inputs / "past.csv",
                    checkpoint=tiny_checkpoint, extra=extra)
    assert past.code == 0, past.stderr
    assert past.stderr.splitlines() == ["hqsam segment: warning: 2 boxes extended past the image "
                                        "edge and were clipped to it."]
    edge = _segment(inputs, tmp_path / "edge.tif", inputs / "edge.csv",
                    checkpoint=tiny_checkpoint, extra=extra)
    assert edge.code == 0 and edge.stderr == "", edge.stderr
    got, want = tifffile.imread(tmp_path / "past.tif"), tifffile.imread(tmp_path / "edge.tif")
    assert set(np.unique(got[1])) - {0} and not got[[0, 2]].any()
    np.testing.assert_array_equal(got, want)
    assert snapshot(inputs) == before and leftovers(tmp_path) == []


def test_largest_object_id_is_kept(inputs, tmp_path, tiny_checkpoint):
    """The largest id of the labels dtype policy (uint32) is a valid object."""
    top = 2**32 - 1
    (inputs / "top.json").write_text(_json({"slice": [1], "box": [0, 25, 20, 50],
                                            "object": top}))
    outcome = _segment(inputs, tmp_path / "top.tif", inputs / "top.json",
                       checkpoint=tiny_checkpoint)
    assert outcome.code == 0, outcome.stderr
    labels = tifffile.imread(tmp_path / "top.tif")
    assert labels.dtype == np.uint32 and set(np.unique(labels)) == {0, top}
