"""A scripted napari session on large images and an image series, and its screenshots.

Run under Xvfb (napari's canvas needs OpenGL)::

    xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/make_screenshot_large.py
    xvfb-run -a python scripts/make_screenshot_large.py --random-weights   # no download

It builds a 4096 x 4096 mosaic of the ``nuclei2d`` sample (8 x 8 copies) as a
two-level multiscale layer, docks the segmentation dock with its "Large images" fold
open, boxes two nuclei far apart, segments them at native resolution (tiles), shows
the whole pyramid (napari then displays its coarse level) and one nucleus close up. Then
it writes three crops of the sample to a folder, docks the image-series dock, opens
the folder, segments an object on the first image, steps to the next image and back.
It checks what a user relies on (labels of level-0 shape; one id per box; labels
files written per image and loaded again) and writes ``docs/screenshot_large.png``
``docs/screenshot_large_detail.png`` and ``docs/screenshot_series.png``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from make_screenshot import box, check, random_checkpoint, settle, wait  # noqa: E402

PLUGIN = "napari-hq-sam"
# two nuclei of the sample (rows, cols of their boxes), placed in mosaic tiles (4, 3) and (1, 6)
NUCLEI = [((2048 + 239, 1536 + 235), (2048 + 275, 1536 + 271)),
          ((512 + 254, 3072 + 212), (512 + 295, 3072 + 247))]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="local HQ-SAM checkpoint (default: official vit_tiny)")
    parser.add_argument("--random-weights", action="store_true",
                        help="random vit_tiny weights (no download; masks are meaningless)")
    parser.add_argument("--out-dir", default=str(ROOT.parent / "docs"))
    return parser.parse_args(argv)


def label_overlay(viewer, text: str) -> None:
    viewer.text_overlay.visible = True
    viewer.text_overlay.text = text
    viewer.text_overlay.color = "yellow"
    viewer.text_overlay.position = "top_left"
    viewer.text_overlay.font_size = 12


def large_image(viewer, app, nuclei, args, out: Path) -> None:
    """The 4096 x 4096 pyramid, two boxes far apart, segmented at native resolution."""
    mosaic = np.tile(nuclei, (8, 8))
    image = viewer.add_image([mosaic, mosaic[::2, ::2]], multiscale=True, name="mosaic 4096²",
                             contrast_limits=(0, 235))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "HQ-SAM segmentation")
    from napari_hq_sam import viewer_session

    session = viewer_session(viewer)
    checkpoint = random_checkpoint() if args.random_weights else args.checkpoint
    session.load("vit_tiny" if checkpoint is None else None, checkpoint, "cpu")
    widget.tiles_fold.set_open(True)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    for (y0, x0), (y1, x1) in NUCLEI:
        boxes.add(box(y0, x0, y1, x1), shape_type="rectangle")
    viewer.layers.selection.active = points
    widget.segment_button.click()
    wait(app, widget.controller.runner)
    print(widget.status.text())
    labels = viewer.layers["HQ-SAM labels"]
    check(labels.data.shape == mosaic.shape, "labels have the full resolution's shape")
    check(set(np.unique(labels.data)) == {0, 1, 2}, "one id per box")
    for k, ((y0, x0), (y1, x1)) in enumerate(NUCLEI, start=1):
        rows, cols = np.nonzero(labels.data == k)
        check(y0 <= rows.mean() <= y1 and x0 <= cols.mean() <= x1 or args.random_weights,
              f"object {k} is centred in its box" + " (not checked: random weights)"
              * args.random_weights)
    labels.opacity = 0.45
    for (y0, x0), (y1, x1) in NUCLEI:  # the boxes again (a write consumes them), to show them
        boxes.add(box(y0, x0, y1, x1), shape_type="rectangle")
    (y0, x0), (y1, x1) = NUCLEI[0]
    viewer.camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    viewer.camera.zoom = 2.2
    if args.random_weights:
        label_overlay(viewer, "RANDOM weights (offline build):\nmasks are meaningless.\n"
                      "Level 0 shown; the box was segmented\nin the tile (window) holding it")
    settle(app, 1.5)
    check(image.data_level == 0, "zoomed in, napari shows level 0")
    viewer.screenshot(str(out / "screenshot_large_detail.png"), canvas_only=False)
    if args.random_weights:
        label_overlay(viewer, "RANDOM weights (offline build):\nmasks are meaningless.\n"
                      "4096 x 4096 pyramid, coarse level shown;\ntwo boxes segmented at "
                      "level 0,\neach in the tile (window) holding it")
    viewer.camera.zoom = 0.16
    viewer.camera.center = (2048, 2048)
    settle(app, 1.5)
    check(image.data_level == 1, "zoomed out, napari shows the coarse level")
    viewer.screenshot(str(out / "screenshot_large.png"), canvas_only=False)
    widget.tiles_fold.set_open(False)
    return widget


def image_series(viewer, app, nuclei, segment, out: Path) -> None:
    """Three crops of the sample as a folder, stepped through with the series dock."""
    import tifffile

    folder = Path(tempfile.mkdtemp()) / "plates"
    folder.mkdir()
    for k, (top, left) in enumerate([(0, 0), (200, 150), (300, 300)], start=1):
        tifffile.imwrite(folder / f"plate_{k}.tif", nuclei[top:top + 212, left:left + 212])
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    dock, series = viewer.window.add_plugin_dock_widget(PLUGIN, "HQ-SAM image series")
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    segment_dock = next(d for d in window.findChildren(type(dock))
                        if d is not dock and "segmentation" in d.windowTitle())
    window.resizeDocks([segment_dock, dock], [560, 360], Qt.Vertical)
    series.folder_edit.setText(str(folder))
    series.open_button.click()
    settle(app, 0.5)
    check(segment.image_combo.currentText() == "plate_1", "the segmentation dock follows")
    segment.prompt_layers_button.click()
    points, boxes = segment.controller.prompt_layers()
    boxes.add(box(60, 40, 110, 90), shape_type="rectangle")
    segment.segment_button.click()
    wait(app, segment.controller.runner)
    series.next_button.click()
    settle(app, 0.5)
    check((folder.parent / "plates_labels" / "plate_1.tif").exists(), "plate_1's labels saved")
    series.previous_button.click()
    settle(app, 0.5)
    check(viewer.layers["HQ-SAM labels"].data.any(), "plate_1's labels loaded back")
    points.add([[150.0, 120.0]])
    viewer.layers["HQ-SAM labels"].opacity = 0.5
    viewer.text_overlay.visible = False
    viewer.reset_view()
    settle(app, 1.0)
    print(series.status.text())
    viewer.screenshot(str(out / "screenshot_series.png"), canvas_only=False)


def main(argv=None) -> None:
    args = parse_args(argv)
    import napari
    import tifffile
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    get_settings().application.gui_notification_level = "error"
    nuclei = tifffile.imread(ROOT.parent / "sample_data" / "nuclei2d_image.tif")
    viewer = napari.Viewer(title="napari-hq-sam: large images and image series")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1600, 1000)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    segment = large_image(viewer, app, nuclei, args, out)
    image_series(viewer, app, nuclei, segment, out)
    print(f"wrote {out}/screenshot_large.png, screenshot_large_detail.png, "
          "screenshot_series.png")
    viewer.close()


if __name__ == "__main__":
    main()
