"""Object prompts: grouping rules, napari layers, napari's own CSV exports, JSON form."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hq_sam.engine.image import describe_layout
from napari_hq_sam.engine.prompt_files import (
    read_prompt_files,
    write_prompts_json,
)
from napari_hq_sam.engine.prompts import (
    ObjectPrompt,
    check_prompts,
    prompts_from_layers,
)


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
    with pytest.raises(ValueError, match="outside the image"):
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
