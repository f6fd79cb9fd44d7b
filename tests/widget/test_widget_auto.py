"""The "Segment everything" widget in a real viewer (Xvfb), docked through the manifest.

The model is chosen in the widget's controls (model type and checkpoint file), as a
user does. Results are compared with :func:`segment_everything` on the same data,
contrast limits and model, so the tests check that the widget reads the right slice
and writes the run into a new Labels layer.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from widget_utils import choose_file

from napari_hq_sam._widget.auto_widget import CURRENT, STACK
from napari_hq_sam.automatic import AutoMaskConfig
from napari_hq_sam.engine.everything import segment_everything

PLUGIN, WIDGET = "napari-hq-sam", "Segment everything"
CFG = AutoMaskConfig(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
TIMEOUT_MS = 180_000


@pytest.fixture
def docked(make_napari_viewer, tiny_checkpoint, nuclei3d):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei3d[15:17, :48, :48], name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    choose_file(widget.model_bar, tiny_checkpoint)
    widget.points_spin.setValue(2)
    widget.iou_spin.setValue(0.0)
    widget.stability_spin.setValue(0.0)
    return viewer, image, widget


def expected(widget, image, **kwargs):
    """The engine's labels for ``image`` with the model the widget loaded."""
    return segment_everything(widget.session.model, image.data, CFG,
                              contrast_limits=image.contrast_limits, **kwargs).labels


def run_and_wait(qtbot, widget):
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=TIMEOUT_MS)


def test_whole_stack_goes_to_a_new_labels_layer(qtbot, docked):
    viewer, image, widget = docked
    widget.scope_combo.setCurrentText(STACK)
    run_and_wait(qtbot, widget)
    layer = viewer.layers["nuclei everything"]

    assert widget.session.model.model_type == "vit_tiny"
    assert layer.data.shape == image.data.shape and layer.data.dtype == np.uint32
    assert layer.data.max() >= 2
    assert np.array_equal(layer.data, expected(widget, image))
    assert widget.task_panel.bar.value() == widget.task_panel.bar.maximum() == 2
    n = int(layer.data.max())  # ids run 1..n through the stack
    assert widget.status.text() == f"{n} objects in 'nuclei everything' (2 slices)."
    assert widget.run_button.isEnabled()


def test_current_slice_only(qtbot, docked):
    viewer, image, widget = docked
    viewer.dims.set_point(0, 1)
    widget.scope_combo.setCurrentText(CURRENT)
    run_and_wait(qtbot, widget)
    labels = viewer.layers["nuclei everything"].data
    assert not labels[0].any() and labels[1].max() >= 1
    assert np.array_equal(labels, expected(widget, image, slices=[(1,)]))
    assert widget.status.text().endswith("(1 slice).")


def test_cancel_keeps_finished_slices(qtbot, docked):
    viewer, image, widget = docked
    widget.scope_combo.setCurrentText(STACK)

    def cancel_on_segment_progress(done, total):
        if total == 2:  # one step per slice here; the model loading reports total 1
            widget.cancel()

    # cancel from the worker thread as soon as slice 0 reports (what the Cancel button
    # does, without a race with the worker starting slice 1)
    widget.runner.progressed.connect(cancel_on_segment_progress, type=Qt.DirectConnection)
    run_and_wait(qtbot, widget)
    labels = viewer.layers["nuclei everything"].data
    full = expected(widget, image)
    assert full[1].any(), "slice 1 has objects when it is segmented"
    assert labels[0].max() >= 1 and not labels[1].any()
    np.testing.assert_array_equal(labels[0], full[0])
    n = int(labels.max())
    objects = "1 object" if n == 1 else f"{n} objects"
    assert widget.status.text() == (f"{objects} in 'nuclei everything' "
                                    "(cancelled; kept 1 finished slice).")


# -- seeded modes --------------------------------------------------------------------------
def test_seeds_from_a_points_layer(qtbot, docked):
    viewer, image, widget = docked
    from napari_hq_sam._widget.auto_widget import SEEDS_POINTS
    from napari_hq_sam.engine.seeds import GivenSeeds

    # (z, y, x) rows as napari holds them; the negative point is not a seed
    viewer.add_points(np.array([[0, 20, 24], [1, 10, 12], [1, 30, 30], [1, 40, 8]]),
                      features={"label": [1, 1, 1, 0]}, name="seeds")
    widget.mode_combo.setCurrentText(SEEDS_POINTS)
    widget.points_layer_combo.setCurrentText("seeds")
    widget.scope_combo.setCurrentText(STACK)
    assert not widget.points_spin.isEnabled() and widget.diameter_spin.isEnabled()
    run_and_wait(qtbot, widget)
    labels = viewer.layers["nuclei everything"].data
    seeds = GivenSeeds({(0,): np.array([[24.0, 20.0]]),
                        (1,): np.array([[12.0, 10.0], [30.0, 30.0]])})
    assert np.array_equal(labels, expected(widget, image, seeds=seeds))
    assert 1 <= labels[0].max() and labels.max() <= 3
    assert widget.task_panel.bar.value() == widget.task_panel.bar.maximum() == 20


def test_seeds_from_the_image_cancel_keeps_the_first_slice(qtbot, docked):
    viewer, image, widget = docked
    from napari_hq_sam._widget.auto_widget import SEEDS_IMAGE
    from napari_hq_sam.engine.seeds import ImageSeeds

    widget.mode_combo.setCurrentText(SEEDS_IMAGE)
    widget.diameter_spin.setValue(9)
    widget.scope_combo.setCurrentText(STACK)

    def cancel_after_slice_0(done, total):
        if total == 20 and done >= 10:    # 10 progress steps per seeded slice
            widget.cancel()

    widget.runner.progressed.connect(cancel_after_slice_0, type=Qt.DirectConnection)
    run_and_wait(qtbot, widget)
    labels = viewer.layers["nuclei everything"].data
    full = expected(widget, image, seeds=ImageSeeds(9.0))
    assert full[0].max() >= 1 and full[1].max() >= 1
    np.testing.assert_array_equal(labels[0], full[0])
    assert not labels[1].any()
    assert "cancelled; kept 1 finished slice" in widget.status.text()
