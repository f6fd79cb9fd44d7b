"""The segmentation widget with a rectangle dragged from outside the image (napari allows it).

The box is clipped to the image as in the engine (the status line says so); only a
box wholly outside is refused, in the status line.
"""

from __future__ import annotations

import numpy as np
from widget_utils import box, click, dock_widget, reference

from napari_hq_sam.engine.labels import paste_masks
from napari_hq_sam.engine.prompts import ObjectPrompt


def test_box_past_the_edge_is_clipped_and_said(make_napari_viewer, qtbot, tiny_checkpoint,
                                               nuclei2d):
    image2d = nuclei2d[:128, :128]
    viewer = make_napari_viewer()
    image = viewer.add_image(image2d, name="nuclei")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    _, boxes = widget.controller.prompt_layers()
    boxes.add(box(-20, 90, 40, 160), shape_type="rectangle")  # past the top and right edges
    click(qtbot, widget, widget.segment_button)

    labels = viewer.layers["HQ-SAM labels"]
    ref = reference(widget, image2d, image.contrast_limits,
                    [ObjectPrompt(box=[90, -0.5, 127.5, 40], object_id=1)])
    want = np.zeros(image2d.shape, np.uint32)
    paste_masks(want, (), list(ref.masks), [1])
    assert want.any()
    np.testing.assert_array_equal(labels.data, want)
    status = widget.status.text()
    assert status.startswith("Added object 1 to 'HQ-SAM labels'"), status
    assert status.endswith("1 box extended past the image edge and was clipped to it."), status

    boxes.add(box(200, 200, 260, 250), shape_type="rectangle")  # wholly below and right
    widget.segment_button.click()
    assert "lies wholly outside the image" in widget.status.text()
    assert not widget.controller.runner.busy
    np.testing.assert_array_equal(labels.data, want)  # nothing written
