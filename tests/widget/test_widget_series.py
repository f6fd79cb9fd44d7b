"""The image-series dock in a real viewer: stepping through a folder, labels files, prompts.

The images are crops of the real nuclei image; the labels files are read back and
compared with what was painted or segmented.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from widget_utils import PLUGIN, box, click, dock_widget

SERIES = "HQ-SAM image series"
CROPS = {"img_1": (0, 0), "img_2": (128, 256), "img_10": (300, 100)}  # name: (top, left)
SIDE = 160


@pytest.fixture
def folder(tmp_path, nuclei2d, nuclei2d_labels):
    """Three images (natural order img_1, img_2, img_10); img_2 already has labels."""
    images = tmp_path / "plates"
    images.mkdir()
    for name, (top, left) in CROPS.items():
        tifffile.imwrite(images / f"{name}.tif", nuclei2d[top:top + SIDE, left:left + SIDE])
    out = tmp_path / "plates_labels"
    out.mkdir()
    top, left = CROPS["img_2"]
    tifffile.imwrite(out / "img_2.tif", nuclei2d_labels[top:top + SIDE, left:left + SIDE])
    return images


def dock_series(viewer, folder):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, SERIES)
    widget.folder_edit.setText(str(folder))
    return widget


def crop(image, name):
    top, left = CROPS[name]
    return image[top:top + SIDE, left:left + SIDE]


def test_stepping_saves_and_loads_labels_per_image(make_napari_viewer, folder, nuclei2d,
                                                   nuclei2d_labels):
    viewer = make_napari_viewer()
    series = dock_series(viewer, folder)
    asked = []
    series.confirm_overwrite = lambda path: asked.append(path) or "cancel"
    series.open_button.click()
    out = folder.parent / "plates_labels"
    assert series.out_edit.text() == str(out)
    assert series.position_label.text() == "1 / 3: img_1"
    np.testing.assert_array_equal(viewer.layers["img_1"].data, crop(nuclei2d, "img_1"))
    labels = viewer.layers["HQ-SAM labels"]
    assert labels.data.shape == (SIDE, SIDE) and not labels.data.any()
    assert not series.previous_button.isEnabled() and series.next_button.isEnabled()

    labels.data[10:20, 30:50] = 7  # the user paints an object
    series.next_button.click()
    np.testing.assert_array_equal(tifffile.imread(out / "img_1.tif")[10:20, 30:50], 7)
    assert tifffile.imread(out / "img_1.tif").sum() == 7 * 200
    assert "img_1" not in viewer.layers  # the series' image layer is replaced
    assert [ly.name for ly in viewer.layers] == ["img_2", "HQ-SAM labels"]
    np.testing.assert_array_equal(viewer.layers["HQ-SAM labels"].data,
                                  crop(nuclei2d_labels, "img_2"))  # its file, loaded
    assert series.status.text() == "img_2 (loaded from img_2.tif)."

    stamp = (out / "img_2.tif").stat().st_mtime_ns
    series.next_button.click()  # img_2's labels unchanged: its file is left alone
    assert (out / "img_2.tif").stat().st_mtime_ns == stamp
    assert series.position_label.text() == "3 / 3: img_10" and not series.next_button.isEnabled()
    assert not (out / "img_10.tif").exists()  # nothing painted, no file
    series.previous_button.click()
    series.previous_button.click()
    assert series.position_label.text() == "1 / 3: img_1"
    np.testing.assert_array_equal(viewer.layers["HQ-SAM labels"].data[10:20, 30:50], 7)
    assert asked == []  # every file it replaced was its own


def test_a_file_not_written_by_the_series_is_replaced_only_when_confirmed(
        make_napari_viewer, folder):
    viewer = make_napari_viewer()
    series = dock_series(viewer, folder)
    answers, asked = ["cancel", "cancel", "replace"], []
    series.confirm_overwrite = lambda path: asked.append(path.name) or answers.pop(0)
    series.open_button.click()
    out = folder.parent / "plates_labels"
    viewer.layers["HQ-SAM labels"].data[0:5, 0:5] = 1
    foreign = np.full((SIDE, SIDE), 9, np.uint16)
    tifffile.imwrite(out / "img_1.tif", foreign)  # another program wrote it meanwhile
    series.save_button.click()  # not replaced
    assert asked == ["img_1.tif"]
    np.testing.assert_array_equal(tifffile.imread(out / "img_1.tif"), foreign)
    series.next_button.click()  # cancelled: the user stays on the image and its labels
    assert series.position_label.text() == "1 / 3: img_1" and "img_1" in viewer.layers
    assert series.status.text() == "Stayed on img_1: its labels are not saved (img_1.tif exists)."
    np.testing.assert_array_equal(tifffile.imread(out / "img_1.tif"), foreign)
    series.next_button.click()  # asked again, replaced
    assert asked == ["img_1.tif"] * 3 and series.position_label.text() == "2 / 3: img_2"
    written = tifffile.imread(out / "img_1.tif")
    assert written[0:5, 0:5].tolist() == [[1] * 5] * 5 and written.sum() == 25


def test_a_labels_file_of_another_shape_is_not_loaded_and_not_replaced_silently(
        make_napari_viewer, folder):
    viewer = make_napari_viewer()
    out = folder.parent / "plates_labels"
    tifffile.imwrite(out / "img_1.tif", np.ones((10, 10), np.uint16))
    series = dock_series(viewer, folder)
    asked = []
    series.confirm_overwrite = lambda path: asked.append(path.name) or "keep"
    series.open_button.click()
    assert "labels file img_1.tif was not loaded" in series.status.text()
    assert not viewer.layers["HQ-SAM labels"].data.any()
    viewer.layers["HQ-SAM labels"].data[0, 0] = 2
    series.next_button.click()  # the file is kept, the series moves on
    assert asked == ["img_1.tif"] and series.position_label.text() == "2 / 3: img_2"
    assert series.status.text() == ("Kept img_1.tif; the labels in the viewer were not saved. "
                                    "img_2 (loaded from img_2.tif).")
    assert tifffile.imread(out / "img_1.tif").shape == (10, 10)


def test_a_damaged_image_is_said_and_the_current_one_kept(make_napari_viewer, folder):
    (folder / "img_3.tif").write_bytes(b"II*\x00 not really a tiff")
    viewer = make_napari_viewer()
    series = dock_series(viewer, folder)
    series.open_button.click()
    series.next_button.click()
    assert series.position_label.text() == "2 / 4: img_2"
    series.next_button.click()
    assert series.status.text().startswith("Error: ") and "img_3.tif" in series.status.text()
    assert series.position_label.text() == "2 / 4: img_2" and "img_2" in viewer.layers
    series.folder_edit.setText(str(folder.parent / "nothing_here"))
    series.open_button.click()
    assert series.status.text().startswith("Error: ") and "img_2" in viewer.layers


def test_segmentation_dock_follows_the_series(make_napari_viewer, qtbot, tiny_checkpoint,
                                              folder, nuclei2d_labels):
    viewer = make_napari_viewer()
    series = dock_series(viewer, folder)
    series.open_button.click()
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    boxes.add(box(40, 40, 80, 80), shape_type="rectangle")  # left unsegmented on img_1
    points.add([[20.0, 20.0]])
    series.next_button.click()  # img_2, with its ground-truth labels file
    assert widget.image_combo.currentText() == "img_2"
    assert widget.labels_combo.currentText() == "HQ-SAM labels"
    assert widget.controller.prompt_layers() == (points, boxes)  # the same layers, emptied
    assert len(points.data) == 0 and len(boxes.data) == 0
    assert viewer.layers.selection.active is points and points.mode == "add"

    points.add([[100.0, 60.0]])
    click(qtbot, widget, widget.segment_button)
    labels = viewer.layers["HQ-SAM labels"]
    gt = crop(nuclei2d_labels, "img_2")
    new_id = int(gt.max()) + 1  # a new object on top of the loaded ones
    assert (labels.data == new_id).any()
    series.next_button.click()
    saved = tifffile.imread(folder.parent / "plates_labels" / "img_2.tif")
    np.testing.assert_array_equal(saved, labels.data)
    np.testing.assert_array_equal(saved[gt > 0], gt[gt > 0])  # the loaded objects kept

    series.previous_button.click()  # back on img_2: its labels file, its embedding kept
    np.testing.assert_array_equal(viewer.layers["HQ-SAM labels"].data, saved)
    points.add([[30.0, 130.0]])
    click(qtbot, widget, widget.segment_button)
    assert "cached embedding" in widget.status.text()
    assert (viewer.layers["HQ-SAM labels"].data == new_id + 1).any()
