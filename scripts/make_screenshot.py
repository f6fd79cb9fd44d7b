"""Screenshot of the HQ-SAM widget at work on the nuclei sample, for the README.

Run under Xvfb (napari's canvas needs OpenGL; Qt's offscreen platform has none)::

    xvfb-run -a python scripts/make_screenshot.py                     # official vit_tiny
    xvfb-run -a python scripts/make_screenshot.py --checkpoint my.pth  # a local file
    xvfb-run -a python scripts/make_screenshot.py --random-weights     # no download

It opens the ``nuclei2d`` sample through the plugin manifest, docks the widget,
clicks points and draws boxes, commits two slices' worth of objects, shows a live
preview, measures the time from a prompt change to the preview mask on the
cached slice, and writes ``docs/screenshot.png``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="local HQ-SAM checkpoint (default: official vit_tiny)")
    parser.add_argument("--random-weights", action="store_true",
                        help="use random vit_tiny weights in the official format (no download; "
                             "the masks are then meaningless, only the UI is shown)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--clicks", type=int, default=5, help="prompt changes timed")
    return parser.parse_args(argv)


def wait(app, widget, timeout: float = 300.0) -> None:
    """Process Qt events until the widget's task chain is done."""
    end = time.perf_counter() + timeout
    while widget.controller.runner.busy and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def settle(app, seconds: float) -> None:
    """Process Qt events for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def box(y0, x0, y1, x1):
    """Rectangle vertices ``(y, x)``."""
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def main(argv=None) -> None:
    """Build the scene, time the clicks, save the PNG."""
    args = parse_args(argv)
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_hq_sam._widget._view import LOCAL_FILE

    checkpoint = args.checkpoint
    if args.random_weights:
        import torch

        from napari_hq_sam.testing import write_random_checkpoint

        torch.manual_seed(0)  # the base weights are drawn before the seeded perturbation
        checkpoint = str(write_random_checkpoint(
            Path(tempfile.mkdtemp()) / "sam_hq_vit_tiny.pth", "vit_tiny", seed=1))
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "error"  # no toasts over the canvas
    weights = "RANDOM weights: masks meaningless" if args.random_weights else "HQ-SAM vit_tiny"
    viewer = napari.Viewer(title=f"napari-hq-sam on the nuclei2d sample ({weights})")
    app = QApplication.instance()
    viewer.window.resize(1500, 900)
    viewer.open_sample("napari-hq-sam", "nuclei2d")
    _, widget = viewer.window.add_plugin_dock_widget("napari-hq-sam", "HQ-SAM segmentation")
    if checkpoint:
        widget.model_combo.setCurrentText(LOCAL_FILE)
        widget.checkpoint_edit.setText(checkpoint)
    widget.prompt_layers_button.click()
    controller = widget.controller
    points, boxes = controller.prompt_layers()

    # Object 1 and 2: boxes; object 3: a positive and a negative click.
    boxes.add([box(300, 60, 350, 118), box(150, 380, 206, 440)], shape_type="rectangle")
    points.add([[96.0, 252.0]])
    widget.segment_button.click()
    wait(app, widget)
    print(widget.status.text())

    # Live preview on the now cached slice: time prompt change -> mask shown.
    widget.live_check.setChecked(True)
    rng = np.random.default_rng(0)
    totals, tasks = [], []
    for _ in range(args.clicks):
        controller.last_click_to_mask = None
        if len(points.data):
            points.selected_data = set(range(len(points.data)))
            points.remove_selected()
            settle(app, 0.3)
            wait(app, widget)
        y, x = rng.uniform(60, 450, size=2)
        controller.last_click_to_mask = None
        points.add([[y, x]])
        end = time.perf_counter() + 60
        while controller.last_click_to_mask is None and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)
        wait(app, widget)
        totals.append(controller.last_click_to_mask)
        tasks.append(controller.runner.last_duration)
    print(f"click -> mask on a cached slice: median {statistics.median(totals) * 1000:.0f} ms "
          f"(incl. {controller._live_timer.interval()} ms debounce; worker task median "
          f"{statistics.median(tasks) * 1000:.0f} ms) over {len(totals)} clicks")

    # Final scene: one more object prompted with a positive and a negative point, previewed.
    points.selected_data = set(range(len(points.data)))
    points.remove_selected()
    boxes.add(box(395, 270, 470, 355), shape_type="rectangle")
    points.add([[420.0, 300.0]])
    points.feature_defaults = {"label": "negative"}
    points.add([[450.0, 335.0]])
    points.feature_defaults = {"label": "positive"}
    settle(app, 0.5)
    wait(app, widget)
    viewer.layers.selection.active = points
    viewer.layers["HQ-SAM labels"].opacity = 0.5
    viewer.layers["HQ-SAM preview"].opacity = 0.5
    viewer.reset_view()
    if args.random_weights:
        viewer.text_overlay.visible = True
        viewer.text_overlay.text = "RANDOM weights (offline build):\nmasks are meaningless"
        viewer.text_overlay.color = "yellow"
        viewer.text_overlay.position = "top_left"
        viewer.text_overlay.font_size = 12
    settle(app, 1.0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    viewer.close()


if __name__ == "__main__":
    main()
