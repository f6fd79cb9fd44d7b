"""The click → mask → click loop as a user lives it, in a shown viewer (Xvfb).

Clicks and keys go through Qt to the canvas, so napari's own handlers (the points
layer's add mode, the keymap of the selected layer) do the work, as for a user.
Layers the widget adds must leave the selection where the user was; its keys must
work on each of its layers; prompt layers follow the chosen image; status lines
speak in words.
"""

from __future__ import annotations

import re

import numpy as np
from app_model.types import KeyBinding
from qtpy.QtCore import QPoint, Qt
from widget_utils import choose_file, click, dock_widget, wait_idle

from napari_hq_sam._widget import _layers
from napari_hq_sam._widget._text import (
    count,
    object_ids,
    on_slice,
    scores,
    shape_words,
    slice_name,
)
from napari_hq_sam._widget._view import NEW_LABELS

STACK = slice(8, 15)  # 7 z-slices of the real nuclei stack (as in test_widget.py)
TUPLE = re.compile(r"\((\d+,\s*)*\d*,?\)")  # "()", "(12,)", "(0, 12)"
SHIFT_S = KeyBinding.from_str("Shift+S")


def canvas_point(viewer, yx) -> QPoint:
    """Widget pixel of the canvas that shows world position ``yx`` (the displayed plane).

    The inverse of the map napari applies to a mouse event (view and scene transforms).
    """
    view = viewer.window._qt_viewer.canvas.view
    x, y = (view.transform * view.scene.transform).map([yx[1], yx[0]])[:2]
    return QPoint(int(round(x)), int(round(y)))


def click_canvas(qtbot, viewer, yx) -> None:
    """A left click of the mouse on the canvas at world position ``yx``."""
    native = viewer.window._qt_viewer.canvas.native
    qtbot.mouseClick(native, Qt.MouseButton.LeftButton, pos=canvas_point(viewer, yx))
    qtbot.wait(20)


def press(qtbot, viewer, key, shift: bool = False) -> None:
    """A key press on the canvas: napari hands it to the selected layer's keymap."""
    native = viewer.window._qt_viewer.canvas.native
    modifier = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    qtbot.keyClick(native, key, modifier)


def assert_clicking_into(viewer, points) -> None:
    """``points`` is the one selected layer, the active one, in add mode."""
    selection = viewer.layers.selection
    assert selection.active is points
    assert set(selection) == {points}
    assert points.mode == "add"


def assert_words(text: str) -> None:
    assert text and not TUPLE.search(text), text
    assert "(s)" not in text, text


def test_clicks_keep_adding_points_after_preview_and_commit(make_napari_viewer, qtbot,
                                                            tiny_checkpoint, nuclei2d):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(nuclei2d, name="nuclei2d")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    assert_clicking_into(viewer, points)
    widget.live_check.setChecked(True)

    click_canvas(qtbot, viewer, (120, 100))
    assert len(points.data) == 1
    np.testing.assert_allclose(points.data[0], [120, 100], atol=1.0)  # a pixel of the screen
    qtbot.waitUntil(lambda: _layers.PREVIEW_NAME in viewer.layers, timeout=120_000)
    wait_idle(qtbot, widget)
    preview = viewer.layers[_layers.PREVIEW_NAME]
    assert_clicking_into(viewer, points)  # the new preview layer did not take the selection
    assert_words(widget.status.text())
    assert widget.status.text().startswith("Preview: 1 object (score ")

    click_canvas(qtbot, viewer, (260, 330))  # the second click lands in the points layer
    assert len(points.data) == 2
    np.testing.assert_allclose(points.data[1], [260, 330], atol=1.0)
    qtbot.waitUntil(lambda: preview.metadata.get("slice") == () and
                    widget.controller.last_click_to_mask is not None, timeout=60_000)
    wait_idle(qtbot, widget)
    widget.live_check.setChecked(False)

    click(qtbot, widget, widget.segment_button)
    labels = viewer.layers[_layers.RESULT_NAME]
    assert labels.data.max() == 1 and set(np.unique(labels.data)) <= {0, 1}
    assert len(points.data) == 0  # consumed by the write
    assert_clicking_into(viewer, points)  # nor did the new labels layer
    assert widget.status.text().startswith("Added object 1 to 'HQ-SAM labels' (score ")
    click_canvas(qtbot, viewer, (300, 200))
    assert len(points.data) == 1
    np.testing.assert_allclose(points.data[0], [300, 200], atol=1.0)
    assert len(boxes.data) == 0

    widget.undo_button.click()
    assert widget.status.text() == "Undid: object 1."
    assert not labels.data.any() and len(points.data) == 3  # the consumed clicks are back


def test_keys_work_on_the_labels_and_preview_layers(make_napari_viewer, qtbot, tiny_checkpoint,
                                                    nuclei3d):
    stack = nuclei3d[STACK]
    viewer = make_napari_viewer(show=True)
    viewer.add_image(stack, name="nuclei3d")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, _ = widget.controller.prompt_layers()
    viewer.dims.set_current_step(0, 2)
    click_canvas(qtbot, viewer, (30, 28))
    np.testing.assert_allclose(points.data, [[2, 30, 28]], atol=1.0)
    press(qtbot, viewer, Qt.Key.Key_S, shift=True)  # Shift+S on the points layer
    wait_idle(qtbot, widget)
    labels = viewer.layers[_layers.RESULT_NAME]
    assert set(np.unique(labels.data[2])) == {0, 1} and not labels.data[[0, 1, 3]].any()
    assert widget.status.text().startswith("Added object 1 to 'HQ-SAM labels' on slice 2 (")
    assert_clicking_into(viewer, points)

    # the user looks at the labels, then segments and undoes from there
    before = labels.data.copy()
    widget.overwrite_check.setChecked(True)  # object 2 is written even where object 1 is
    points.add([[2, 12.0, 40.0]])
    viewer.layers.selection.active = labels
    press(qtbot, viewer, Qt.Key.Key_S, shift=True)
    wait_idle(qtbot, widget)
    assert (labels.data[2] == 2).any() and labels.data.max() == 2
    assert widget.status.text().startswith("Added object 2 to 'HQ-SAM labels' on slice 2 (")
    assert viewer.layers.selection.active is labels  # the user's choice stays
    press(qtbot, viewer, Qt.Key.Key_U, shift=True)
    assert widget.status.text() == "Undid: object 2 on slice 2."
    np.testing.assert_array_equal(labels.data, before)
    np.testing.assert_allclose(points.data, [[2, 12, 40]])  # its prompt is back

    # and from the preview layer: T toggles the next points, Shift+S segments
    widget.live_check.setChecked(True)
    qtbot.waitUntil(lambda: _layers.PREVIEW_NAME in viewer.layers, timeout=60_000)
    wait_idle(qtbot, widget)
    widget.live_check.setChecked(False)
    preview = viewer.layers[_layers.PREVIEW_NAME]
    assert preview.metadata["slice"] == (2,)
    assert widget.status.text().startswith("Preview of slice 2: 1 object (score ")
    viewer.layers.selection.active = preview
    press(qtbot, viewer, Qt.Key.Key_T)
    assert points.feature_defaults["label"].iloc[0] == "negative"
    assert widget.status.text() == "Next points are negative (T toggles)."
    press(qtbot, viewer, Qt.Key.Key_S, shift=True)
    wait_idle(qtbot, widget)
    assert (labels.data[2] == 2).any() and labels.data.max() == 2
    assert len(points.data) == 0
    assert viewer.layers.selection.active is preview

    viewer.window.remove_dock_widget(widget)
    widget.close()  # the widget's keys leave every layer with it; the points keep T
    for layer in (points, labels, preview):
        assert SHIFT_S not in layer.keymap
    assert KeyBinding.from_str("T") not in preview.keymap
    assert KeyBinding.from_str("T") in points.keymap


def test_prompt_layers_follow_the_chosen_image(make_napari_viewer, qtbot, tiny_checkpoint,
                                               nuclei2d, nuclei3d):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei2d, name="nuclei2d")
    viewer.add_image(nuclei3d[STACK], name="nuclei3d")
    widget = dock_widget(viewer, tiny_checkpoint)
    controller = widget.controller
    widget.image_combo.setCurrentText("nuclei2d")
    widget.prompt_layers_button.click()
    points2d, boxes2d = controller.prompt_layers()
    assert points2d.ndim == boxes2d.ndim == 2
    points2d.add([[120.0, 100.0]])

    widget.image_combo.setCurrentText("nuclei3d")  # one choice: the prompts follow
    points3d, boxes3d = controller.prompt_layers()
    assert points3d.ndim == boxes3d.ndim == 3
    assert (points2d.name, boxes2d.name) == ("HQ-SAM points [nuclei2d]", "HQ-SAM boxes [nuclei2d]")
    assert not points2d.visible and not boxes2d.visible
    np.testing.assert_array_equal(points2d.data, [[120, 100]])  # the 2D prompts are kept
    assert_clicking_into(viewer, points3d)  # the user was in the points: still is
    assert SHIFT_S in points3d.keymap and SHIFT_S not in points2d.keymap
    viewer.dims.set_current_step(0, 2)
    points3d.add([[2, 30.0, 28.0]])
    points3d.add([[4, 20.0, 20.0]])
    click(qtbot, widget, widget.segment_button)
    labels3d = viewer.layers[_layers.RESULT_NAME]
    assert labels3d.data.shape == nuclei3d[STACK].shape and labels3d.data[2].max() == 1
    assert widget.status.text().startswith("Added object 1 to 'HQ-SAM labels' on slice 2 (")

    widget.image_combo.setCurrentText("nuclei2d")  # back: the 2D prompts come back
    assert controller.prompt_layers() == (points2d, boxes2d)
    assert (points2d.name, points2d.visible) == (_layers.POINTS_NAME, True)
    assert (points3d.name, points3d.visible) == ("HQ-SAM points [nuclei3d]", False)
    np.testing.assert_array_equal(points3d.data, [[4, 20, 20]])  # slice 2's was consumed
    (prompt,) = controller.prompts(())
    np.testing.assert_array_equal(prompt.points, [[100, 120]])  # (X, Y)
    assert widget.labels_combo.currentText() == NEW_LABELS  # the 3D labels are not for it
    click(qtbot, widget, widget.segment_button)
    labels2d = viewer.layers["HQ-SAM labels [nuclei2d]"]
    assert labels2d.data.shape == nuclei2d.shape and labels2d.data.max() == 1
    assert widget.status.text().startswith("Added object 1 to 'HQ-SAM labels [nuclei2d]' (")
    assert labels3d.data[2].max() == 1 and labels3d.data.max() == 1  # untouched

    widget.image_combo.setCurrentText("nuclei3d")
    assert controller.prompt_layers() == (points3d, boxes3d)
    assert widget.labels_combo.currentText() == _layers.RESULT_NAME
    widget.image_combo.setCurrentText("nuclei2d")
    widget.prompt_layers_button.click()  # the button on bound layers changes nothing
    assert controller.prompt_layers() == (points2d, boxes2d)
    viewer.layers.remove("nuclei2d")  # the choice moves to the stack, and the prompts with it
    assert widget.image_combo.currentText() == "nuclei3d"
    assert controller.prompt_layers() == (points3d, boxes3d)
    assert points3d.visible and not points2d.visible


def test_segment_everything_result_leaves_the_selection(make_napari_viewer, qtbot,
                                                       tiny_checkpoint, nuclei3d):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(nuclei3d[15:17, :48, :48], name="nuclei")
    points = viewer.add_points(ndim=3, name="mine")  # the user's own layer, in add mode
    points.mode = "add"
    _, widget = viewer.window.add_plugin_dock_widget("napari-hq-sam", "Segment everything")
    choose_file(widget.model_bar, tiny_checkpoint)
    widget.points_spin.setValue(2)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert "nuclei everything" in viewer.layers
    assert_clicking_into(viewer, points)
    click_canvas(qtbot, viewer, (20, 30))
    np.testing.assert_allclose(points.data, [[0, 20, 30]], atol=1.0)


def test_layers_added_inside_keep_selection_leave_the_selection_alone(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((64, 64)), name="image")
    points = _layers.make_points_layer(viewer, 2, image="image")
    boxes = _layers.make_boxes_layer(viewer, 2, image="image")
    assert viewer.layers.selection.active is image  # made without taking the selection
    assert points.metadata[_layers.IMAGE_KEY] == boxes.metadata[_layers.IMAGE_KEY] == "image"
    viewer.layers.selection.active = points
    points.mode = "select"
    with _layers.keep_selection(viewer):
        viewer.add_labels(np.zeros((64, 64), np.uint8), name="new")
        viewer.add_shapes(None, name="more")
    assert viewer.layers.selection.active is points and points.mode == "select"
    assert set(viewer.layers.selection) == {points}

    viewer.layers.selection.update({boxes})  # two selected: no active layer
    assert viewer.layers.selection.active is None
    with _layers.keep_selection(viewer):
        viewer.add_labels(np.zeros((64, 64), np.uint8), name="newer")
        viewer.layers.remove(boxes)
    assert set(viewer.layers.selection) == {points}

    viewer.layers.selection.clear()
    with _layers.keep_selection(viewer):
        viewer.add_labels(np.zeros((64, 64), np.uint8), name="newest")
    assert len(viewer.layers.selection) == 0


def test_status_words():
    assert [slice_name(i) for i in [(), (12,), (0, 12), (1, 0, 12)]] == [
        "", "slice 12", "t 0, slice 12", "axis 0 1, t 0, slice 12"]
    assert on_slice((12,)) == " on slice 12" and on_slice(()) == ""
    assert on_slice((0, 12), "from") == " from t 0, slice 12"
    assert [object_ids(i) for i in [[], [4], [1, 2, 3], [3, 1, 2, 7], [1, 3]]] == [
        "no object", "object 4", "objects 1–3", "objects 1–3, 7", "objects 1, 3"]
    assert object_ids(range(1, 40, 2)) == "20 objects, ids 1–39"
    assert [count(n, "slice") for n in (0, 1, 2)] == ["0 slices", "1 slice", "2 slices"]
    assert count(1, "new embedding") == "1 new embedding"
    assert shape_words((7, 61, 57)) == "7 × 61 × 57"
    assert scores([0.912]) == "score 0.91"
    assert scores([0.5, 0.25]) == "scores 0.50, 0.25"
    assert scores(np.arange(7) / 10) == "scores 0.00, 0.10, 0.20, 0.30, 0.40, …"
