"""The "Segment everything" widget in a real viewer (Xvfb), docked through the manifest.

Results are compared with :func:`segment_everything` on the same data, contrast
limits and model, so the tests check that the widget reads the right slice and
writes the run into a new Labels layer.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.engine.everything import segment_everything

PLUGIN, WIDGET = "napari-hq-sam", "Segment everything"
CFG = AutoMaskConfig(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
TIMEOUT_MS = 180_000


@pytest.fixture
def docked(make_napari_viewer, tiny_model, nuclei3d):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei3d[15:17, :48, :48], name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.set_model(tiny_model)
    widget.points_spin.setValue(2)
    widget.iou_spin.setValue(0.0)
    widget.stability_spin.setValue(0.0)
    return viewer, image, widget


def expected(model, image, **kwargs):
    return segment_everything(model, image.data, CFG, contrast_limits=image.contrast_limits,
                              **kwargs).labels


def run_and_wait(qtbot, widget):
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=TIMEOUT_MS)


def test_whole_stack_goes_to_a_new_labels_layer(qtbot, docked, tiny_model):
    viewer, image, widget = docked
    widget.scope_combo.setCurrentText("whole stack")
    run_and_wait(qtbot, widget)
    layer = viewer.layers["nuclei everything"]

    assert layer.data.shape == image.data.shape and layer.data.dtype == np.uint32
    assert layer.data.max() >= 2
    assert np.array_equal(layer.data, expected(tiny_model, image))
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == 2
    assert "objects" in widget.status.text() and widget.run_button.isEnabled()


def test_current_slice_only(qtbot, docked, tiny_model):
    viewer, image, widget = docked
    viewer.dims.set_point(0, 1)
    widget.scope_combo.setCurrentText("current slice")
    run_and_wait(qtbot, widget)
    labels = viewer.layers["nuclei everything"].data
    assert not labels[0].any() and labels[1].max() >= 1
    assert np.array_equal(labels, expected(tiny_model, image, slices=[(1,)]))


def test_cancel_keeps_finished_slices(qtbot, docked, tiny_model):
    viewer, image, widget = docked
    widget.scope_combo.setCurrentText("whole stack")
    # cancel from the worker thread as soon as slice 0 reports (what the Cancel button
    # does, without a race with the worker starting slice 1)
    widget.runner.progressed.connect(lambda done, total: widget.cancel(),
                                     type=Qt.DirectConnection)
    run_and_wait(qtbot, widget)
    assert widget.last_run.cancelled and widget.last_run.slices == [(0,)]
    labels = viewer.layers["nuclei everything"].data
    assert labels[0].max() >= 1 and not labels[1].any()
    assert np.array_equal(labels[0], expected(tiny_model, image)[0])
    assert "cancelled" in widget.status.text()
