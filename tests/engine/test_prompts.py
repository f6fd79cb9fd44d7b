"""Object prompts: grouping rules, napari layers, napari's own CSV exports, JSON form,
the values a prompt may hold, and how prompts meet the image (boxes clipped to it)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hq_sam.engine.image import describe_layout
from napari_hq_sam.engine.prompt_files import (
    read_prompt_files,
    write_prompts_json,
)
from napari_hq_sam.engine.prompt_tables import (
    object_value,
    points_table,
    prompts_from_layers,
    shapes_table,
)
from napari_hq_sam.engine.prompts import (
    MAX_OBJECT_ID,
    ObjectPrompt,
    check_prompts,
    clipping_note,
)
from napari_hq_sam.errors import HQSamWarning, InputError


@pytest.fixture(scope="module")
def layers():
    """A real Points layer (label + object features) and Shapes layer on a ZYX stack."""
    from napari.layers import Points, Shapes

    points = Points(
        np.array([[3, 10.5, 20.25], [3, 15, 25], [5, 30, 31], [5, 32, 33],
                  [7, 40, 41], [7, 42, 43], [4, 12, 14]]),
        features={"label": ["positive", "negative", "positive", "positive",
                            "positive", "negative", "positive"],
                  "object": [np.nan, np.nan, 9, 9, np.nan, np.nan, np.nan]}, ndim=3)
    shapes = Shapes([np.array([[4, 10, 12], [4, 10, 30], [4, 20, 30], [4, 20, 12]]),
                     np.array([[7, 1, 2], [7, 1, 6], [7, 5, 6], [7, 5, 2]])],
                    shape_type="rectangle", ndim=3)
    return points, shapes


def _by_key(prompts):
    return {(p.slice_index, p.object_id): p for p in prompts}


def test_grouping_rules(layers):
    prompts = prompts_from_layers(*layers)
    got = _by_key(prompts)
    # object 9 keeps its id; boxes (slice 4, slice 7) then free points (slices 3, 7) follow
    assert sorted(got) == [((3,), 10), ((4,), 11), ((5,), 9), ((7,), 12), ((7,), 13)]
    p9 = got[(5,), 9]
    assert np.array_equal(p9.points, [[31, 30], [33, 32]]) and p9.box is None  # (X, Y)
    assert np.array_equal(got[(3,), 10].labels, [1, 0])
    box4 = got[(4,), 11]  # the free point at (y=12, x=14) lies inside it and refines it
    assert np.array_equal(box4.box, [12, 10, 30, 20])
    assert np.array_equal(box4.points, [[14, 12]])
    assert got[(7,), 12].points is None and np.array_equal(got[(7,), 12].box, [2, 1, 6, 5])
    assert np.array_equal(got[(7,), 13].points, [[41, 40], [43, 42]])


def test_napari_csv_exports_round_trip(layers, tmp_path):
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    points, shapes = layers
    points.save(str(tmp_path / "points.csv"))
    shapes.save(str(tmp_path / "boxes.csv"))
    header = (tmp_path / "points.csv").read_text().splitlines()[0]
    assert header.split(",")[:4] == ["index", "axis-0", "axis-1", "axis-2"]
    from_files = read_prompt_files([tmp_path / "boxes.csv", tmp_path / "points.csv"])
    from_layers = prompts_from_layers(points, shapes)
    assert sorted(_by_key(from_files)) == sorted(_by_key(from_layers))
    for key, p in _by_key(from_layers).items():
        q = _by_key(from_files)[key]
        for name in ("points", "labels", "box"):
            a, b = getattr(p, name), getattr(q, name)
            assert (a is None and b is None) or np.allclose(a, b), (key, name)
    # JSON form round trip
    write_prompts_json(tmp_path / "p.json", from_layers)
    again = _by_key(read_prompt_files([tmp_path / "p.json"]))
    assert sorted(again) == sorted(_by_key(from_layers))
    assert np.allclose(again[(4,), 11].points, [[14, 12]])


def test_json_entries_are_objects(tmp_path):
    (tmp_path / "a.json").write_text(
        '[{"slice": [2], "points": [[5, 6]]}, {"slice": [2], "points": [[8, 9]], "labels": [0]},'
        ' {"slice": [3], "box": [1, 2, 10, 12], "object": "cell"}]')
    got = read_prompt_files([tmp_path / "a.json"])
    assert [(p.slice_index, p.object_id) for p in got] == [((2,), 2), ((2,), 3), ((3,), 1)]
    assert got[1].labels.tolist() == [0]


def test_bad_prompt_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("index,axis-0,axis-1\n")
    (tmp_path / "typo.csv").write_text("index,axis-0,axis-1,lable\n0,1,2,positive\n")
    (tmp_path / "ellipse.csv").write_text(
        "index,shape-type,vertex-index,axis-0,axis-1\n0,ellipse,0,1,1\n0,ellipse,1,1,5\n")
    (tmp_path / "empty.json").write_text('{"prompts": []}')
    for name, match in [("empty.csv", "empty"), ("header.csv", "no prompts"),
                        ("typo.csv", "unknown columns \\['lable'\\]"),
                        ("ellipse.csv", "only rectangles"), ("empty.json", "empty")]:
        with pytest.raises(ValueError, match=match):
            read_prompt_files([tmp_path / name])
    with pytest.raises(FileNotFoundError):
        read_prompt_files([tmp_path / "missing.csv"])


def test_prompts_checked_against_image():
    layout = describe_layout((31, 61, 57))
    check_prompts([ObjectPrompt((30,), box=[0, 0, 56, 60], object_id=1)], layout)
    with pytest.raises(ValueError, match="slice \\(31,\\) does not exist"):
        check_prompts([ObjectPrompt((31,), box=[0, 0, 5, 5], object_id=1)], layout)
    with pytest.raises(ValueError, match="a point of object 1 on slice \\(3,\\) lies outside "
                       "the image \\(x=57.2, y=3; slices are 57 wide and 61 high\\)"):
        check_prompts([ObjectPrompt((3,), points=[[57.2, 3]], object_id=1)], layout)
    with pytest.raises(ValueError, match="slice axes"):
        check_prompts([ObjectPrompt((), box=[0, 0, 5, 5], object_id=1)], layout)
    with pytest.raises(ValueError, match="no prompts"):
        check_prompts([], layout)


def test_mask_prompt_holds_box_logits_and_clicks():
    from napari_hq_sam.engine.prompts import ObjectPrompt, mask_prompt, mask_to_logits

    mask = np.zeros((512, 384), dtype=bool)  # long side 512 -> scale 0.5, 256 x 192
    mask[100:200, 40:120] = True
    logits = mask_to_logits(mask)
    assert logits.shape == (1, 256, 256)
    assert (logits[0, 55:95, 25:55] > 0).all()  # inside, at half scale
    assert (logits[0, :45] < 0).all() and (logits[0, :, 192:] < 0).all()  # outside, padding
    click = ObjectPrompt((3,), np.array([[60.0, 150.0]]), np.array([0]), None, None)
    prompt = mask_prompt(mask, (3,), 7, extra=[click])
    np.testing.assert_array_equal(prompt.box, [40, 100, 119, 199])
    np.testing.assert_array_equal(prompt.points, [[60.0, 150.0]])
    assert prompt.object_id == 7 and prompt.slice_index == (3,)
    np.testing.assert_array_equal(prompt.mask, logits)


def test_box_past_the_edge_is_clipped_to_the_image():
    layout = describe_layout((31, 61, 57))  # slices span x -0.5..56.5, y -0.5..60.5
    inside = ObjectPrompt((3,), box=[-0.5, 0, 56.5, 60.5], object_id=1)
    half_out = ObjectPrompt((5,), points=[[50, 55]], box=[40, 30, 80, 70], object_id=2)
    left_top = ObjectPrompt((5,), box=[-12, -3, 10, 20], object_id=3)
    got = check_prompts([inside, half_out, left_top], layout)
    assert got[0] is inside  # nothing past the edge: the same prompt
    np.testing.assert_array_equal(got[1].box, [40, 30, 56.5, 60.5])
    np.testing.assert_array_equal(got[1].points, [[50, 55]])
    assert (got[1].slice_index, got[1].object_id) == ((5,), 2)
    np.testing.assert_array_equal(got[2].box, [-0.5, -0.5, 10, 20])
    assert clipping_note([inside, half_out, left_top], got) == (
        "2 boxes extended past the image edge and were clipped to it.")
    assert clipping_note(got[1:2], got[1:2]) is None
    assert clipping_note(got[::2], [got[0], got[2].clipped_to(15, 57)]) == (
        "1 box extended past the image edge and was clipped to it.")


@pytest.mark.parametrize("prompt, message", [
    (ObjectPrompt((5,), box=[60, 3, 80, 20], object_id=2),
     r"the box of object 2 on slice \(5,\) lies wholly outside the image \(x 60 to 80, y 3 to 20; "
     "slices are 57 wide and 61 high"),
    (ObjectPrompt((5,), box=[-10, 5, -0.5, 20], object_id=2), "wholly outside"),  # edge only
    (ObjectPrompt((5,), box=[3, 61, 20, 90], object_id=2), "wholly outside"),
    (ObjectPrompt((5,), points=[[3, -0.6]], box=[0, 0, 80, 20], object_id=2),
     r"a point of object 2 on slice \(5,\) lies outside the image \(x=3, y=-0.6"),
])
def test_prompts_wholly_outside_are_refused(prompt, message):
    with pytest.raises(InputError, match=message):
        check_prompts([prompt], describe_layout((31, 61, 57)))


def test_clipped_box_gives_the_mask_of_the_clipped_box(tiny_model, nuclei3d, nuclei3d_labels):
    """The engine rule on a real run: a box dragged past the image edge segments as if the
    user had stopped at the edge, and the run says so once."""
    from napari_hq_sam.engine.segmenter import SliceSegmenter
    from napari_hq_sam.engine.stack import segment_stack

    image = nuclei3d[9:12]
    z = 1  # slice 10 of the stack: a nucleus touches the left edge (x from 0 to 15)
    rows, cols = np.nonzero(nuclei3d_labels[10] == nuclei3d_labels[10, 37, 5])
    assert cols.min() == 0
    past = [ObjectPrompt((z,), box=[-20, rows.min() - 2, cols.max() + 2, rows.max() + 2],
                         object_id=4)]
    clipped = [ObjectPrompt((z,), box=[-0.5, rows.min() - 2, cols.max() + 2, rows.max() + 2],
                            object_id=4)]
    segmenter = SliceSegmenter(tiny_model)
    with pytest.warns(HQSamWarning, match="^1 box extended past the image edge and was clipped"):
        got = segment_stack(image, past, segmenter=segmenter)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", HQSamWarning)  # nothing to clip: no warning
        want = segment_stack(image, clipped, segmenter=segmenter)
    assert got.labels[z].any() and not got.labels[[0, 2]].any()
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.scores == want.scores
    # the box as drawn would have reached the model with other coordinates
    raw = segmenter.segment(None, past, segmenter.embeddings([_slice_rgb(image, z)])[0])
    assert raw.scores[0] != pytest.approx(want.scores[((z,), 4)], abs=1e-6)


def _slice_rgb(image, z):
    from napari_hq_sam.engine.image import default_contrast_limits, model_slice

    return model_slice(image, describe_layout(image.shape), (z,), default_contrast_limits(image))


def test_largest_object_id_is_the_labels_policy():
    from napari_hq_sam.engine.labels import LABELS_DTYPE

    assert MAX_OBJECT_ID == np.iinfo(LABELS_DTYPE).max
    assert ObjectPrompt(box=[0, 0, 5, 5], object_id=MAX_OBJECT_ID).object_id == MAX_OBJECT_ID


@pytest.mark.parametrize("value, key", [
    (None, None), (np.nan, None), ("", None), (" nan ", None), (7, 7), (np.int64(7), 7),
    (7.0, 7), ("7", 7), (" 7.0 ", 7), ("cell", "cell"), (" cell a ", "cell a"),
    (MAX_OBJECT_ID, MAX_OBJECT_ID), (str(MAX_OBJECT_ID), MAX_OBJECT_ID),
])
def test_object_values(value, key):
    got = object_value(value)
    assert got == key and type(got) is type(key)


@pytest.mark.parametrize("value, message", [
    (1.5, "not a whole number"), ("1.5", "not a whole number"), ("inf", "not a whole number"),
    (0, "not positive"), ("-3", "not positive"), (MAX_OBJECT_ID + 1, "too large"),
    ("1e300", "too large"), (2**40, "too large"), (True, "neither a whole number"),
    ([1], "neither a whole number"), ({}, "neither a whole number"),
])
def test_object_values_refused(value, message):
    with pytest.raises(InputError, match=message):
        object_value(value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=[[np.nan, 3]]), "points must be finite"),
    (dict(box=[0, 0, np.inf, 5]), "a box is"),
    (dict(box=[9, 0, 3, 5]), r"x0 <= x1 and y0 <= y1, got \[9.0, 0.0, 3.0, 5.0\]"),
    (dict(box=[0, 0, 5, 5], object_id=-1), "not positive"),
    (dict(box=[0, 0, 5, 5], object_id=1.5), "must be a whole number"),
    (dict(box=[0, 0, 5, 5], object_id=MAX_OBJECT_ID + 1), "too large"),
])
def test_object_prompt_refuses_nonsense(kwargs, message):
    with pytest.raises(InputError, match=message):
        ObjectPrompt((1,), **kwargs)


def test_layers_with_nonsense_are_refused():
    with pytest.raises(InputError, match=r"point 1 has NaN or infinite coordinates"):
        points_table([[1, 2, 3], [1, np.nan, 3]])
    with pytest.raises(InputError, match=r"point 0: object 1.5 is not a whole number"):
        points_table([[1, 2, 3]], {"object": [1.5]})
    flat = np.array([[4, 10, 12], [4, 10, 30], [4, 10, 30], [4, 10, 12]])  # y0 == y1
    with pytest.raises(InputError, match=r"shape 1 has no area \(x 12 to 30, y 10 to 10\)"):
        shapes_table([np.array([[4, 1, 2], [4, 1, 6], [4, 5, 6], [4, 5, 2]]), flat])
    with pytest.raises(InputError, match="shape 0 is an ellipse: only rectangles"):
        shapes_table([flat], ["ellipse"])
    with pytest.raises(InputError, match="shape 0: object 0 is not positive"):
        shapes_table([np.array([[4, 1, 2], [4, 1, 6], [4, 5, 6], [4, 5, 2]])], objects=[0])
