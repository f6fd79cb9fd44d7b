"""'Refine all objects' in a real viewer: same labels as the engine, one undo step, cancel."""

from __future__ import annotations

import numpy as np
from widget_utils import click, dock_widget

from napari_hq_sam._widget._view import ALL_SLICES, NEW_LABELS, THIS_SLICE
from napari_hq_sam.engine.refine import refine_labels
from napari_hq_sam.engine.segmenter import SliceSegmenter

CROP = (slice(200, 296), slice(200, 296))  # 8 nuclei of the real 2D sample
STACK = (slice(10, 13), slice(0, 24), slice(0, 24))  # 3 slices, 3 nuclei each


def engine_refine(widget, image, labels, contrast_limits, **kwargs):
    """The engine alone on the widget's model and cache (none of the widget's code)."""
    controller = widget.controller
    segmenter = SliceSegmenter(controller.model, cache=controller.session.cache)
    return refine_labels(image, labels, segmenter=segmenter, contrast_limits=contrast_limits,
                         hq_token_only=controller.session.hq_token_only, **kwargs)


def ids(labels) -> set[int]:
    return set(np.unique(labels).tolist()) - {0}


def test_refine_all_on_2d_matches_the_engine_and_undoes_in_one_step(
        make_napari_viewer, qtbot, tiny_checkpoint, nuclei2d, nuclei2d_labels):
    image_data, source = nuclei2d[CROP], nuclei2d_labels[CROP].copy()
    viewer = make_napari_viewer()
    image = viewer.add_image(image_data, name="nuclei2d")
    layer = viewer.add_labels(source.copy(), name="stardist")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.labels_combo.setCurrentText(NEW_LABELS)
    click(qtbot, widget, widget.refine_all_button)
    assert "Choose the labels layer" in widget.status.text()

    widget.labels_combo.setCurrentText("stardist")
    widget.threshold_spin.setValue(-1.0)  # random weights predict IoUs below 0
    widget.refine_iou_spin.setValue(0.0)  # and masks that overlap the objects little
    click(qtbot, widget, widget.refine_all_button)

    ref = engine_refine(widget, image_data, source, image.contrast_limits,
                        score_threshold=-1.0, iou_threshold=0.0)
    assert ref.refined > 0
    np.testing.assert_array_equal(layer.data, ref.labels)
    assert ids(layer.data) == ids(source)
    status = widget.status.text()
    assert status.startswith(f"Done: refined {ref.refined} of 8 objects in 'stardist'")
    assert f"kept {len(ref.kept)}" in status
    assert len(widget.controller.history) == 1
    click(qtbot, widget, widget.undo_button)
    np.testing.assert_array_equal(layer.data, source)
    assert widget.controller.history == []


def test_refine_all_slices_and_cancel_keep_finished_slices(make_napari_viewer, qtbot,
                                                           tiny_checkpoint, nuclei3d,
                                                           nuclei3d_labels):
    image_data, source = nuclei3d[STACK], nuclei3d_labels[STACK].copy()
    viewer = make_napari_viewer()
    image = viewer.add_image(image_data, name="nuclei3d")
    layer = viewer.add_labels(source.copy(), name="cellpose")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.labels_combo.setCurrentText("cellpose")
    widget.threshold_spin.setValue(-1.0)
    widget.refine_iou_spin.setValue(0.0)

    # this slice only: slice 1 changes, the others stay
    viewer.dims.set_current_step(0, 1)
    widget.refine_scope_combo.setCurrentText(THIS_SLICE)
    click(qtbot, widget, widget.refine_all_button)
    ref = engine_refine(widget, image_data, source, image.contrast_limits,
                        score_threshold=-1.0, iou_threshold=0.0)
    np.testing.assert_array_equal(layer.data[1], ref.labels[1])
    np.testing.assert_array_equal(layer.data[[0, 2]], source[[0, 2]])
    assert "on slice 1" in widget.status.text()
    click(qtbot, widget, widget.undo_button)
    np.testing.assert_array_equal(layer.data, source)

    # all slices, cancelled after the first: it stays, the rest is untouched
    image.contrast_limits = (image.contrast_limits[0], image.contrast_limits[1] - 1)
    widget.refine_scope_combo.setCurrentText(ALL_SLICES)
    runner, reports = widget.controller.runner, []

    def cancel_on_first(done, total):
        if total == 3:  # the refinement's reports (not the model loading's)
            reports.append((done, total))
            if len(reports) == 1:
                widget.cancel_button.click()

    runner.progressed.connect(cancel_on_first)
    click(qtbot, widget, widget.refine_all_button)
    runner.progressed.disconnect(cancel_on_first)
    assert reports[0] == (1, 3)
    again = engine_refine(widget, image_data, source, image.contrast_limits,
                          score_threshold=-1.0, iou_threshold=0.0)
    finished = [z for z in range(3) if not np.array_equal(layer.data[z], source[z])]
    assert finished and finished[0] == 0 and 2 not in finished
    for z in finished:
        np.testing.assert_array_equal(layer.data[z], again.labels[z])
    assert widget.status.text().startswith("Cancelled with")
    click(qtbot, widget, widget.undo_button)
    np.testing.assert_array_equal(layer.data, source)
