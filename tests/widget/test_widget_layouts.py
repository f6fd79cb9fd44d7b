"""Which slice, channel and intensities the widget hands to the engine.

The model input comes from the widget's own request for the displayed slice and
:func:`~napari_hq_sam._widget._tasks.slice_image`, the code a segmentation task runs;
no model call is made.
"""

from __future__ import annotations

import numpy as np
from widget_utils import dock_widget

from napari_hq_sam._widget._tasks import slice_image
from napari_hq_sam.engine.image import to_model_image


def model_input(widget) -> tuple[tuple, np.ndarray]:
    """``(index, uint8 (H, W, 3) image)`` the widget sends for the displayed slice."""
    _, request = widget.controller.slices.request(need_prompts=False)
    return request.index, slice_image(request)


def test_4d_tzyx_slice_and_prompt_layers(make_napari_viewer, tiny_checkpoint):
    data = np.arange(2 * 3 * 16 * 20, dtype=np.uint16).reshape(2, 3, 16, 20)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="tzyx", contrast_limits=(0, data.max()))
    widget = dock_widget(viewer, tiny_checkpoint)
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 2)
    index, image = model_input(widget)
    assert index == (1, 2)
    expected = to_model_image(data[1, 2], (0, data.max()))
    np.testing.assert_array_equal(image, expected)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    assert points.ndim == 4 and boxes.ndim == 4
    assert widget.controller.context().layout.labels_shape == data.shape
    viewer.dims.ndisplay = 3
    widget.segment_button.click()
    assert "switch napari to 2D view" in widget.status.text()
    viewer.dims.ndisplay = 2
    viewer.dims.order = (0, 2, 1, 3)  # a ZX plane is displayed
    widget.propagate_button.click()
    assert "not the image's YX plane" in widget.status.text()
    assert not widget.controller.runner.busy


def test_rgb_image_is_one_slice_of_colour(make_napari_viewer, tiny_checkpoint):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(rgb, name="rgb", rgb=True)
    widget = dock_widget(viewer, tiny_checkpoint)
    index, image = model_input(widget)
    assert index == () and widget.controller.context().layout.labels_shape == (16, 20)
    np.testing.assert_array_equal(image, rgb)
    assert widget.channel_axis_combo.count() == 1  # "none": an RGB image has no channel axis


def test_channel_choice_of_a_multichannel_stack(make_napari_viewer, tiny_checkpoint):
    data = np.zeros((2, 5, 16, 20), dtype=np.float32)  # C, Z, Y, X
    data[0] = 1.0
    data[1, 3] = np.linspace(0, 1, 16 * 20).reshape(16, 20)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="czyx", contrast_limits=(0, 1))
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.channel_axis_combo.setCurrentText("0")
    widget.channel_spin.setValue(1)
    assert widget.channel_spin.maximum() == 1
    viewer.dims.set_current_step(1, 3)
    index, image = model_input(widget)
    ctx = widget.controller.context()
    assert ctx.layout.labels_shape == (5, 16, 20) and index == (3,)
    np.testing.assert_array_equal(image[..., 0], np.rint(data[1, 3] * 255).astype(np.uint8))


def test_intensities_go_through_the_layer_contrast_limits(make_napari_viewer, tiny_checkpoint,
                                                          mri_stack):
    viewer = make_napari_viewer()
    ct = mri_stack.astype(np.int16) - 1000  # signed values, like CT in Hounsfield units
    layer = viewer.add_image(ct, name="signed")
    layer.contrast_limits = (-900, -400)
    widget = dock_widget(viewer, tiny_checkpoint)
    viewer.dims.set_current_step(0, 12)
    index, image = model_input(widget)
    assert index == (12,)
    grey = image[..., 0].astype(int)
    sl = ct[12]
    assert (grey[sl <= -900] == 0).all() and (grey[sl >= -400] == 255).all()
    mid = (sl > -900) & (sl < -400)
    assert mid.any()
    np.testing.assert_allclose(grey[mid], (sl[mid] + 900) / 500 * 255, atol=0.51)


def test_only_a_leading_channel_axis_is_offered(make_napari_viewer, tiny_checkpoint):
    """Labels (the image without its channel axis) line up with the image in napari only
    when the channel axis comes first: other axes are not offered."""
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((4, 2, 16, 20)), name="zcyx")
    viewer.add_image(np.random.default_rng(1).random((16, 20)), name="yx")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.image_combo.setCurrentText("zcyx")
    items = [widget.channel_axis_combo.itemText(i)
             for i in range(widget.channel_axis_combo.count())]
    assert items == ["none", "0"]
    widget.image_combo.setCurrentText("yx")
    assert widget.channel_axis_combo.count() == 1
