"""Large images in the segmentation dock: native-resolution tiles, multiscale layers.

The 4096 x 4096 images are the real nuclei image repeated 8 x 8. A nucleus well
inside a tile's core must get, through the widget, exactly the mask that segmenting
that tile's crop alone gives (the engine's contract), pasted at the right place of
full-size labels; on a multiscale layer the same holds while napari shows level 1.
"""

from __future__ import annotations

import numpy as np
import pytest
from widget_utils import box, click, dock_widget, reference

from napari_hq_sam.engine.prompts import ObjectPrompt
from napari_hq_sam.engine.tiles import DEFAULT_TILING, Extent, Tiling

REPEAT = 8  # 512 px * 8 = 4096 px
# nucleus 174 of the ground truth (rows 243..270, cols 239..266), in mosaic tile (4, 3)
NUCLEUS = (243, 239, 271, 267)
OFFSET = (4 * 512, 3 * 512)


@pytest.fixture
def no_moves(monkeypatch):
    """Decode each object once, in its routed tile.

    Random weights give blotchy masks that reach a tile's edge, which the engine
    answers by decoding again in a wider window (its own tests cover that); here
    the routed tile's decode is what the widget must reproduce and place.
    """
    monkeypatch.setattr("napari_hq_sam.engine.tiled.MAX_MOVES", 0)


@pytest.fixture(scope="module")
def mosaic(nuclei2d) -> np.ndarray:
    """(4096, 4096) uint16: the nuclei image tiled 8 x 8."""
    return np.tile(nuclei2d, (REPEAT, REPEAT))


def nucleus_box(margin: int = 4):
    """``(y0, x0, y1, x1)`` around the nucleus in the mosaic."""
    y0, x0, y1, x1 = NUCLEUS
    return (OFFSET[0] + y0 - margin, OFFSET[1] + x0 - margin,
            OFFSET[0] + y1 + margin, OFFSET[1] + x1 + margin)


def crop_alone(widget, mosaic, contrast_limits, y0, x0, y1, x1) -> np.ndarray:
    """The box's mask from segmenting its tile's crop alone, placed in a full-size plane."""
    window = DEFAULT_TILING.route(mosaic.shape, Extent(y0, x0, y1, x1))
    assert window.shape == (1024, 1024)  # the nucleus is decoded at native resolution
    crop = mosaic[window.slices]
    prompt = ObjectPrompt(box=[x0 - window.left, y0 - window.top, x1 - window.left,
                               y1 - window.top], object_id=1)
    mask = reference(widget, crop, contrast_limits, [prompt]).masks[0]
    assert mask.sum() > 50
    full = np.zeros(mosaic.shape, bool)
    full[window.slices] = mask
    return full


def test_4096_image_is_segmented_at_native_resolution(make_napari_viewer, qtbot,
                                                      tiny_checkpoint, mosaic, no_moves):
    viewer = make_napari_viewer()
    image = viewer.add_image(mosaic, name="mosaic")
    widget = dock_widget(viewer, tiny_checkpoint)
    assert widget.controller.session.tiling == DEFAULT_TILING
    widget.prompt_layers_button.click()
    _, boxes = widget.controller.prompt_layers()
    y0, x0, y1, x1 = nucleus_box()
    boxes.add(box(y0, x0, y1, x1), shape_type="rectangle")

    widget.live_check.setChecked(True)  # the preview covers the object's crop only
    qtbot.waitUntil(lambda: widget.status.text().startswith("Preview:"), timeout=120_000)
    preview = viewer.layers["HQ-SAM preview"]
    expected = crop_alone(widget, mosaic, image.contrast_limits, y0, x0, y1, x1)
    rows, cols = np.nonzero(expected)
    assert preview.data.shape == (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    np.testing.assert_allclose(preview.translate, [rows.min(), cols.min()])
    np.testing.assert_array_equal(preview.data > 0, expected[rows.min():rows.max() + 1,
                                                             cols.min():cols.max() + 1])
    widget.live_check.setChecked(False)

    click(qtbot, widget, widget.segment_button)
    labels = viewer.layers["HQ-SAM labels"]
    assert labels.data.shape == mosaic.shape
    np.testing.assert_array_equal(labels.data == 1, expected)
    assert set(np.unique(labels.data)) == {0, 1}
    (change,) = widget.controller.history[-1].changes  # the undo record holds the object only
    assert change.before.shape == (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    click(qtbot, widget, widget.undo_button)
    assert not labels.data.any()


def test_multiscale_layer_is_segmented_at_level_0(make_napari_viewer, qtbot, tiny_checkpoint,
                                                  mosaic, no_moves):
    viewer = make_napari_viewer()
    scale, translate = (0.5, 0.5), (100.0, -40.0)  # physical units: prompts live in world space
    image = viewer.add_image([mosaic, mosaic[::2, ::2]], multiscale=True, name="pyramid",
                             scale=scale, translate=translate, contrast_limits=(0, 235))
    viewer.camera.zoom = 0.1  # zoomed out: napari shows the coarse level
    qtbot.waitUntil(lambda: image.data_level == 1, timeout=10_000)
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    y0, x0, y1, x1 = nucleus_box()
    corners = np.array([[y0, x0], [y1, x1]], float) * scale + translate  # where the user drags
    data = np.array([points.world_to_data(c) for c in corners])  # napari's conversion
    boxes.add(box(*data[0], *data[1]), shape_type="rectangle")
    click(qtbot, widget, widget.segment_button)

    labels = viewer.layers["HQ-SAM labels"]
    assert labels.data.shape == mosaic.shape  # level 0, whatever level is shown
    np.testing.assert_allclose(labels.scale, scale)
    np.testing.assert_allclose(labels.translate, translate)
    expected = crop_alone(widget, mosaic, (0, 235), y0, x0, y1, x1)
    np.testing.assert_array_equal(labels.data == 1, expected)
    assert widget.status.text().startswith("Added object 1 to 'HQ-SAM labels'")
    assert "; tiles at native resolution, " in widget.status.text()  # cached if run before


def test_large_images_controls_set_the_session_tiling(make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = dock_widget(viewer, tiny_checkpoint)
    session = widget.controller.session
    widget.tiles_fold.set_open(True)
    widget.tile_spin.setValue(512)
    widget.halo_spin.setValue(64)
    assert session.tiling == Tiling(512, 64)
    assert widget.tiles_fold.toggle.text() == "Large images: 512 px tiles, 64 px halo"
    widget.tile_spin.setValue(256)  # the halo is bounded by the tile: (256 - 16) / 2
    assert widget.halo_spin.maximum() == 120 and session.tiling == Tiling(256, 64)
    widget.tiles_check.setChecked(False)
    assert session.tiling is None and not widget.tile_spin.isEnabled()
    assert widget.tiles_fold.toggle.text() == "Large images: resized to the model input"
    session.set_tiling(1024, 200)  # a script's change shows in the dock
    assert widget.tiles_check.isChecked() and widget.tile_spin.value() == 1024
    assert widget.halo_spin.value() == 200
