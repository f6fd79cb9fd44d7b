"""The segmentation widget in a real viewer (Xvfb): slices, prompts, labels, undo, errors.

Masks are compared with what the engine alone computes for the same prompts, so
these tests check that the widget reads the right slice, prompts and contrast,
and writes one id per object where it should.
"""

from __future__ import annotations

import numpy as np
import pytest
from app_model.types import KeyBinding
from widget_utils import box, click, dock_widget, reference, wait_idle

from napari_hq_sam._widget._model_bar import HQ_ONLY, SAM_AND_HQ
from napari_hq_sam.engine.labels import paste_mask, paste_masks
from napari_hq_sam.engine.prompts import ObjectPrompt

STACK = slice(8, 15)  # 7 z-slices of the real nuclei stack keep the tests fast


def expected_labels(shape, masks, ids, start=None):
    out = np.zeros(shape, np.uint32) if start is None else start.copy()
    paste_masks(out, (), list(masks), ids)
    return out


def test_point_and_box_on_2d_give_one_id_each(make_napari_viewer, qtbot, tiny_checkpoint,
                                              nuclei2d):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei2d, name="nuclei2d")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    points.add([[120.0, 100.0]])  # (y, x)
    boxes.add(box(200, 200, 250, 260), shape_type="rectangle")
    click(qtbot, widget, widget.segment_button)

    labels = viewer.layers["HQ-SAM labels"]
    ref = reference(widget, nuclei2d, image.contrast_limits, [
        ObjectPrompt(box=[200, 200, 260, 250], object_id=1),
        ObjectPrompt(points=[[100, 120]], labels=[1], object_id=2)])
    assert labels.data.shape == nuclei2d.shape
    np.testing.assert_array_equal(labels.data, expected_labels(nuclei2d.shape, ref.masks, [1, 2]))
    assert set(np.unique(labels.data)) <= {0, 1, 2}  # one id per object, nothing else
    assert len(points.data) == 0 and len(boxes.data) == 0  # prompts consumed
    assert widget.status.text().startswith("Added objects 1–2 to 'HQ-SAM labels' (scores ")


def test_negative_point_is_sent_as_negative(make_napari_viewer, qtbot, tiny_checkpoint,
                                            nuclei2d):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei2d, name="nuclei2d")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, _ = widget.controller.prompt_layers()
    points.add([[120.0, 100.0]])
    points.selected_data = set()
    points.keymap[KeyBinding.from_str("T")](points)  # the T key: next points are negative
    points.add([[140.0, 160.0]])
    assert list(points.features["label"]) == ["positive", "negative"]
    np.testing.assert_allclose(points.face_color[1], [1, 0, 0, 1])  # negative shows red
    (sent,) = widget.controller.prompts(())
    np.testing.assert_array_equal(sent.labels, [1, 0])
    np.testing.assert_allclose(sent.points, [[100, 120], [160, 140]])  # (X, Y)
    click(qtbot, widget, widget.segment_button)

    pts = np.array([[100, 120], [160, 140]])
    ref = reference(widget, nuclei2d, image.contrast_limits,
                    [ObjectPrompt(points=pts, labels=[1, 0], object_id=1)])
    labels = viewer.layers["HQ-SAM labels"].data
    np.testing.assert_array_equal(labels == 1, ref.masks[0])


def test_prompts_on_3d_land_on_their_slices(make_napari_viewer, qtbot, tiny_checkpoint,
                                            nuclei3d):
    stack = nuclei3d[STACK]
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="nuclei3d")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    assert points.ndim == 3 and boxes.ndim == 3

    viewer.dims.set_current_step(0, 2)
    points.add([[2, 30.0, 28.0]])
    click(qtbot, widget, widget.segment_button)
    viewer.dims.set_current_step(0, 5)
    boxes.add(box(10, 12, 40, 45, lead=[5]), shape_type="rectangle")
    boxes.keymap[KeyBinding.from_str("Shift+S")](boxes)  # the Shift+S key = the button
    wait_idle(qtbot, widget)

    labels = viewer.layers["HQ-SAM labels"].data
    assert labels.shape == stack.shape
    assert not labels[[0, 1, 3, 4, 6]].any()  # nothing outside the prompted slices
    lims = image.contrast_limits
    ref2 = reference(widget, stack[2], lims, [ObjectPrompt(points=[[28, 30]], labels=[1])])
    ref5 = reference(widget, stack[5], lims, [ObjectPrompt(box=[12, 10, 45, 40])])
    np.testing.assert_array_equal(labels[2], np.where(ref2.masks[0], 1, 0))
    np.testing.assert_array_equal(labels[5], np.where(ref5.masks[0], 2, 0))


def test_no_overwrite_then_undo_then_overwrite(make_napari_viewer, qtbot, tiny_checkpoint,
                                               nuclei2d):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei2d, name="nuclei2d")
    widget = dock_widget(viewer, tiny_checkpoint)
    click(qtbot, widget, widget.model_bar.load_button)
    ref = reference(widget, nuclei2d, image.contrast_limits,
                    [ObjectPrompt(box=[150, 150, 300, 300])]).masks[0]
    assert ref.any(), "the seeded test weights must give a non-empty mask for this box"
    existing = np.zeros(nuclei2d.shape, np.uint16)
    rows, cols = np.nonzero(ref)
    existing[rows[: len(rows) // 2], cols[: len(cols) // 2]] = 7  # half the mask is taken
    existing[:20, :20] = 7
    target = viewer.add_labels(existing.copy(), name="mine")
    widget.labels_combo.setCurrentText("mine")
    widget.prompt_layers_button.click()
    _, boxes = widget.controller.prompt_layers()
    boxes.add(box(150, 150, 300, 300), shape_type="rectangle")
    click(qtbot, widget, widget.segment_button)

    np.testing.assert_array_equal(target.data, expected_labels(None, [ref], [8], existing))
    np.testing.assert_array_equal(target.data[existing == 7], 7)  # object 7 untouched

    click(qtbot, widget, widget.undo_button)
    np.testing.assert_array_equal(target.data, existing)
    assert len(boxes.data) == 1  # the box is back
    widget.overwrite_check.setChecked(True)
    click(qtbot, widget, widget.segment_button)
    expected = existing.copy()
    expected[ref] = 8
    np.testing.assert_array_equal(target.data, expected)
    assert (target.data[ref] == 8).all()  # asked to: the new object took object 7's pixels


def test_mask_prompt_refines_an_existing_object(make_napari_viewer, qtbot, tiny_checkpoint,
                                                nuclei2d, nuclei2d_labels):
    from napari_hq_sam.engine.prompts import mask_prompt

    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei2d, name="nuclei2d")
    gt = viewer.add_labels(nuclei2d_labels.copy(), name="ground truth")
    object_id = int(nuclei2d_labels[256, 256]) or int(np.bincount(nuclei2d_labels.ravel())[1:]
                                                       .argmax() + 1)
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.labels_combo.setCurrentText("ground truth")
    widget.refine_spin.setValue(object_id)
    click(qtbot, widget, widget.refine_button)

    seed = nuclei2d_labels == object_id
    prompt = mask_prompt(seed, (), object_id)
    assert prompt.mask.shape == (1, 256, 256) and prompt.box is not None
    ref = reference(widget, nuclei2d, image.contrast_limits, [prompt]).masks[0]
    expected = nuclei2d_labels.copy()
    paste_mask(expected, (), ref, object_id, replace=True)
    np.testing.assert_array_equal(gt.data, expected)
    others = (nuclei2d_labels != object_id) & (nuclei2d_labels != 0)
    np.testing.assert_array_equal(gt.data[others], nuclei2d_labels[others])
    click(qtbot, widget, widget.undo_button)
    np.testing.assert_array_equal(gt.data, nuclei2d_labels)


def test_event_loop_runs_while_embedding(make_napari_viewer, qtbot, tiny_checkpoint, nuclei2d):
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei2d, name="nuclei2d")
    image.contrast_limits = (0, 180)  # a slice no other test embedded: a cache miss
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, _ = widget.controller.prompt_layers()
    points.add([[300.0, 300.0]])
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    widget.segment_button.click()
    assert widget.controller.runner.busy  # returned at once; the work runs in a thread
    assert not widget.segment_button.isEnabled() and widget.cancel_button.isEnabled()
    wait_idle(qtbot, widget)
    timer.stop()
    seconds = widget.controller.runner.last_duration
    assert "new embedding" in widget.status.text()
    assert seconds > 0.2
    assert len(ticks) >= 0.25 * seconds / 0.020, (len(ticks), seconds)
    assert widget.segment_button.isEnabled()


def test_errors_are_reported_not_raised(make_napari_viewer, qtbot, tiny_checkpoint, nuclei2d,
                                        tmp_path):
    viewer = make_napari_viewer()
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.segment_button.click()
    assert "No image layer" in widget.status.text()
    widget.prompt_layers_button.click()
    assert "No image layer" in widget.status.text()

    viewer.add_image(nuclei2d, name="nuclei2d")
    widget.segment_button.click()
    assert "No prompts" in widget.status.text()
    assert not widget.controller.runner.busy

    bad = tmp_path / "sam_hq_vit_tiny.pth"
    bad.write_bytes(b"this is not a checkpoint" * 100)
    bar = widget.model_bar
    bar.checkpoint_edit.setText(str(bad))
    click(qtbot, widget, bar.load_button)
    assert "not a readable PyTorch checkpoint" in widget.status.text()
    assert widget.controller.model is None
    assert bar.active.text() == "Active: No model loaded"
    bar.checkpoint_edit.setText(str(tmp_path / "missing.pth"))
    click(qtbot, widget, bar.load_button)
    assert "not found" in widget.status.text()
    assert bar.load_button.isEnabled() and widget.segment_button.isEnabled()

    bar.checkpoint_edit.setText(str(tiny_checkpoint))  # a good file, in bf16 this time
    bar.precision_combo.setCurrentText("bf16")
    click(qtbot, widget, bar.load_button)
    assert widget.controller.model.precision == "bf16"
    assert widget.controller.model.model_type == "vit_tiny"
    assert bar.active.text() == "Active: vit_tiny on cpu, bf16, SAM + HQ"


@pytest.mark.parametrize("hq_token_only", [True])
def test_live_preview_follows_prompts(make_napari_viewer, qtbot, tiny_checkpoint, nuclei2d,
                                      hq_token_only):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei2d, name="nuclei2d")
    widget = dock_widget(viewer, tiny_checkpoint)
    bar = widget.model_bar
    bar.mode_combo.setCurrentText(HQ_ONLY if hq_token_only else SAM_AND_HQ)
    assert "single objects" in bar.mode_combo.toolTip()
    widget.prompt_layers_button.click()
    points, _ = widget.controller.prompt_layers()
    widget.live_check.setChecked(True)
    points.add([[120.0, 100.0]])
    qtbot.waitUntil(lambda: "HQ-SAM preview" in viewer.layers, timeout=120_000)
    wait_idle(qtbot, widget)
    controller = widget.controller
    controller.last_click_to_mask = None
    points.add([[260.0, 330.0]])  # second click: the embedding is cached now
    qtbot.waitUntil(lambda: controller.last_click_to_mask is not None, timeout=60_000)
    wait_idle(qtbot, widget)

    ref = reference(widget, nuclei2d, image.contrast_limits,
                    [ObjectPrompt(points=[[100, 120], [330, 260]], labels=[1, 1])],
                    hq_token_only=hq_token_only).masks[0]
    np.testing.assert_array_equal(viewer.layers["HQ-SAM preview"].data == 1, ref)
    assert "labels" not in [lyr.name.split()[-1] for lyr in viewer.layers]  # nothing committed
    assert controller.last_click_to_mask < 30


def test_closing_the_widget_mid_task_is_quiet(make_napari_viewer, qtbot, tiny_checkpoint,
                                             nuclei2d):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei2d, name="nuclei2d")
    widget = dock_widget(viewer, tiny_checkpoint)
    runner = widget.controller.runner
    widget.prompt_layers_button.click()
    points, _ = widget.controller.prompt_layers()
    assert KeyBinding.from_str("Shift+S") in points.keymap
    widget.live_check.setChecked(True)
    widget.model_bar.load_button.click()
    assert runner.busy
    viewer.window.remove_dock_widget(widget)
    widget.close()
    qtbot.waitUntil(lambda: not runner.busy, timeout=120_000)
    viewer.add_image(nuclei2d, name="another")  # layer events no longer reach the widget
    viewer.dims.set_current_step(0, 0)
    assert widget.controller._closed
    assert KeyBinding.from_str("Shift+S") not in points.keymap  # unbound with the widget
    assert KeyBinding.from_str("T") in points.keymap  # the layer's own toggle stays
