"""A scripted napari session with every HQ-SAM widget, and the README's screenshots.

Run under Xvfb (napari's canvas needs OpenGL; Qt's offscreen platform has none)::

    xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/make_screenshot.py
    xvfb-run -a python scripts/make_screenshot.py --checkpoint my.pth   # a local file
    xvfb-run -a python scripts/make_screenshot.py --random-weights      # no download

It opens the ``nuclei2d`` sample through the plugin manifest, docks the three widgets
(tabbed in one dock area), loads the model once through ``viewer_session``, adds the
prompt layers, boxes and clicks objects, writes them, clicks again, times the click ->
mask path of the live preview on the cached slice, segments everything on the current
slice, and checks what a user relies on: the prompt layer stays selected in add mode,
the window fits a 1080-pixel screen, one model serves every widget. It writes
``docs/screenshot.png`` (segmentation), ``docs/screenshot_everything.png`` and
``docs/screenshot_training.png``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-hq-sam"
WIDGETS = ("HQ-SAM segmentation", "Segment everything", "HQ-SAM training (adapter)")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="local HQ-SAM checkpoint (default: official vit_tiny)")
    parser.add_argument("--random-weights", action="store_true",
                        help="use random vit_tiny weights in the official format (no download; "
                             "the masks are then meaningless, only the UI is shown)")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    parser.add_argument("--clicks", type=int, default=5, help="prompt changes timed")
    return parser.parse_args(argv)


def settle(app, seconds: float) -> None:
    """Process Qt events for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app, runner, timeout: float = 600.0) -> None:
    """Process Qt events until ``runner`` has no task."""
    end = time.perf_counter() + timeout
    while runner.busy and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def box(y0, x0, y1, x1):
    """Rectangle vertices ``(y, x)``."""
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def check(condition: bool, what: str) -> None:
    """Print a check's outcome; a failed one ends the script with an error."""
    print(f"{'ok  ' if condition else 'FAIL'} {what}")
    if not condition:
        raise SystemExit(f"check failed: {what}")


def random_checkpoint() -> str:
    import torch

    from napari_hq_sam.testing import write_random_checkpoint

    torch.manual_seed(0)  # the base weights are drawn before the seeded perturbation
    return str(write_random_checkpoint(Path(tempfile.mkdtemp()) / "sam_hq_vit_tiny.pth",
                                       "vit_tiny", seed=1))


def time_clicks(app, widget, points, clicks: int) -> None:
    """Live preview on the cached slice: prompt change -> mask shown, whole path."""
    controller = widget.controller
    widget.live_check.setChecked(True)
    rng = np.random.default_rng(0)
    totals, tasks = [], []
    for _ in range(clicks):
        controller.last_click_to_mask = None
        y, x = rng.uniform(60, 450, size=2)
        points.add([[y, x]])
        end = time.perf_counter() + 60
        while controller.last_click_to_mask is None and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)
        wait(app, controller.runner)
        totals.append(controller.last_click_to_mask)
        tasks.append(controller.runner.last_duration)
        points.selected_data = {len(points.data) - 1}
        points.remove_selected()
        settle(app, 0.3)
        wait(app, controller.runner)
    print(f"click -> mask on a cached slice: median {statistics.median(totals) * 1000:.0f} ms "
          f"(incl. {controller._live_timer.interval()} ms debounce; worker task median "
          f"{statistics.median(tasks) * 1000:.0f} ms) over {len(totals)} clicks")


def main(argv=None) -> None:
    """Run the session, check it, save the PNGs."""
    args = parse_args(argv)
    import napari
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    from napari_hq_sam import viewer_session
    from napari_hq_sam.model import HQSam

    checkpoint = random_checkpoint() if args.random_weights else args.checkpoint
    get_settings().application.gui_notification_level = "error"  # no toasts over the canvas
    weights = "RANDOM weights: masks meaningless" if args.random_weights else "HQ-SAM vit_tiny"
    viewer = napari.Viewer(title=f"napari-hq-sam on the nuclei2d sample ({weights})")
    app = QApplication.instance()
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "nuclei2d")
    docks, widgets = [], []
    for name in WIDGETS:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        docks.append(dock)
        widgets.append(widget)
    for dock in docks[1:]:
        window.tabifyDockWidget(docks[0], dock)
    docks[0].raise_()
    settle(app, 0.5)
    check(window.height() <= 1080, f"window {window.height()} px high with every widget docked")

    segment, everything, training = widgets
    session = viewer_session(viewer)
    session.load("vit_tiny" if checkpoint is None else None, checkpoint, "cpu")
    settle(app, 0.3)
    gc.collect()
    check(sum(isinstance(o, HQSam) for o in gc.get_objects()) == 1, "one model in memory")
    check(all("vit_tiny" in w.model_bar.active.text() for w in widgets),
          "every widget shows the active model")

    segment.prompt_layers_button.click()
    points, boxes = segment.controller.prompt_layers()
    boxes.add([box(300, 60, 350, 118), box(150, 380, 206, 440)], shape_type="rectangle")
    viewer.layers.selection.active = points
    points.mode = "add"
    points.add([[96.0, 252.0]])
    segment.segment_button.click()
    wait(app, segment.controller.runner)
    print(segment.status.text())
    check(viewer.layers.selection.active is points and points.mode == "add",
          "after a write the points layer is still selected, in add mode")
    time_clicks(app, segment, points, args.clicks)
    check(viewer.layers.selection.active is points and points.mode == "add",
          "after live previews the points layer is still selected, in add mode")

    # One more object, with a positive and a negative click, shown in the preview.
    boxes.add(box(395, 270, 470, 355), shape_type="rectangle")
    points.add([[420.0, 300.0]])
    points.feature_defaults = {"label": "negative"}
    points.add([[450.0, 335.0]])
    points.feature_defaults = {"label": "positive"}
    settle(app, 0.5)
    wait(app, segment.controller.runner)
    viewer.layers["HQ-SAM labels"].opacity = 0.5
    viewer.layers["HQ-SAM preview"].opacity = 0.5
    viewer.layers.selection.active = points
    viewer.reset_view()
    if args.random_weights:
        viewer.text_overlay.visible = True
        viewer.text_overlay.text = "RANDOM weights (offline build):\nmasks are meaningless"
        viewer.text_overlay.color = "yellow"
        viewer.text_overlay.position = "top_left"
        viewer.text_overlay.font_size = 12
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settle(app, 1.0)
    viewer.screenshot(str(out / "screenshot.png"), canvas_only=False)

    docks[1].raise_()
    everything.points_spin.setValue(8 if args.random_weights else 32)
    if args.random_weights:  # random weights score low: keep what they give, to show it
        everything.iou_spin.setValue(0.0)
        everything.stability_spin.setValue(0.0)
    everything.run_button.click()
    wait(app, everything.runner)
    print(everything.status.text())
    check(viewer.layers.selection.active is points, "segment everything keeps the selection")
    viewer.layers["nuclei2d everything"].opacity = 0.6
    settle(app, 1.0)
    viewer.screenshot(str(out / "screenshot_everything.png"), canvas_only=False)

    docks[2].raise_()
    training.image_combo.setCurrentText("nuclei2d")
    training.labels_combo.setCurrentText("nuclei2d ground truth")  # from the sample
    settle(app, 1.0)
    viewer.screenshot(str(out / "screenshot_training.png"), canvas_only=False)
    print(f"wrote {out}/screenshot*.png")
    viewer.close()


if __name__ == "__main__":
    main()
