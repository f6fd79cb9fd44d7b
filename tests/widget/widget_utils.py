"""Helpers of the widget tests: dock the widget through the manifest, wait for its tasks."""

from __future__ import annotations

import numpy as np

from napari_hq_sam._widget._model_bar import LOCAL_FILE

PLUGIN = "napari-hq-sam"
WIDGET = "HQ-SAM segmentation"
TASK_TIMEOUT_MS = 120_000


def dock_widget(viewer, checkpoint):
    """Dock the segmentation widget (through npe2), its model bar set to a local file."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    choose_file(widget.model_bar, checkpoint)
    return widget


def choose_file(bar, checkpoint, device: str = "cpu") -> None:
    """Set a model bar to a local checkpoint file, as a user does."""
    bar.model_combo.setCurrentText(LOCAL_FILE)
    bar.checkpoint_edit.setText(str(checkpoint))
    bar.device_combo.setCurrentText(device)


def wait_idle(qtbot, widget, timeout: int = TASK_TIMEOUT_MS) -> None:
    """Process events until the widget's task chain (load model, then work) has finished."""
    runner = widget.controller.runner
    qtbot.waitUntil(lambda: not runner.busy, timeout=timeout)


def click(qtbot, widget, button) -> None:
    """Click ``button`` and wait for what it started."""
    button.click()
    wait_idle(qtbot, widget)


def box(y0, x0, y1, x1, lead=()):
    """Rectangle vertices for a Shapes layer, ``lead`` = slice index."""
    lead = list(lead)
    return np.array([[*lead, y0, x0], [*lead, y0, x1], [*lead, y1, x1], [*lead, y1, x0]],
                    dtype=float)


def reference(widget, image2d, contrast_limits, prompts, hq_token_only=False):
    """What the engine alone gives for ``prompts`` on one 2D slice (the widget must match).

    Uses the widget's model and embedding cache, but none of its code.
    """
    from napari_hq_sam.engine.image import to_model_image
    from napari_hq_sam.engine.segmenter import SliceSegmenter

    controller = widget.controller
    segmenter = SliceSegmenter(controller.model, cache=controller.session.cache,
                               hq_token_only=hq_token_only)
    return segmenter.segment(to_model_image(image2d, contrast_limits), prompts)
