"""One model per viewer for every HQ-SAM dock, docks that fit the screen, progress in the
dock, plain errors: a real viewer under Xvfb, widgets docked through the manifest."""

from __future__ import annotations

import gc

import numpy as np
from widget_utils import PLUGIN, WIDGET, box, choose_file, wait_idle

from napari_hq_sam import viewer_session
from napari_hq_sam.model import HQSam

AUTO, TRAINING = "Segment everything", "HQ-SAM training (adapter)"


def _models_alive() -> set[int]:
    return {id(o) for o in gc.get_objects() if isinstance(o, HQSam)}


def dock_all(viewer):
    """Dock the three widgets as a user does; returns them in docking order."""
    return [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
            for name in (WIDGET, AUTO, TRAINING)]


def test_one_model_serves_every_widget(make_napari_viewer, qtbot, tiny_checkpoint, nuclei2d):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei2d[:96, :128], name="nuclei")
    before = _models_alive()
    segment, auto, training = dock_all(viewer)
    for widget in (segment, auto, training):
        assert widget.model_bar.active.text() == "Active: No model loaded"
    # load in the training widget's bar; the others follow
    choose_file(training.model_bar, tiny_checkpoint)
    training.model_bar.load_button.click()
    qtbot.waitUntil(lambda: not training.runner.busy, timeout=120_000)
    session = viewer_session(viewer)
    assert session.model is not None and session.model.model_type == "vit_tiny"
    qtbot.waitUntil(lambda: "vit_tiny on cpu" in auto.model_bar.active.text(), timeout=5_000)
    for widget in (segment, auto, training):
        assert widget.model_bar.active.text() == "Active: vit_tiny on cpu, fp32, SAM + HQ"
        assert widget.model_bar.settings.isHidden()  # loaded: the settings fold away
    # the auto widget uses it without loading again
    auto.points_spin.setValue(2)
    auto.run_button.click()
    qtbot.waitUntil(lambda: not auto.runner.busy, timeout=180_000)
    assert "nuclei everything" in viewer.layers
    assert "Loading" not in auto.status.text()
    gc.collect()
    assert len(_models_alive() - before) == 1  # one copy in memory for three widgets
    assert segment.controller.model is auto.session.model is training.session.model


def test_docking_every_widget_never_grows_the_window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1400, 900)
    qtbot.wait(200)
    start = window.height()
    widgets = dock_all(viewer)
    qtbot.wait(300)
    assert window.height() <= max(start, 1080)
    for widget in widgets:  # every dock scrolls inside itself
        area = widget.scroll_area
        assert area.widget().sizeHint().height() > area.minimumSizeHint().height()
    # a long error wraps inside the dock instead of widening it
    segment = widgets[0]
    width = segment.width()
    segment.controller.show_error(ValueError("x" * 40 + " word" * 80))
    qtbot.wait(100)
    assert segment.width() == width and segment.status.wordWrap()


def test_stack_progress_shows_counts_in_the_dock(make_napari_viewer, qtbot, tiny_checkpoint,
                                                 nuclei3d):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei3d[8:14], name="stack")
    widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)[1]
    choose_file(widget.model_bar, tiny_checkpoint)
    widget.prompt_layers_button.click()
    _, boxes = widget.controller.prompt_layers()
    for z in (0, 2, 4):
        boxes.add_rectangles(box(10, 10, 40, 40, lead=(z,)))
    seen = []
    panel = widget.task_panel
    widget.controller.runner.progressed.connect(
        lambda done, total: seen.append((done, total, panel.counts.text())))
    widget.stack_button.click()
    wait_idle(qtbot, widget)
    stack_counts = [text for done, total, text in seen if total == 3]
    assert [t.split(" ·")[0] for t in stack_counts] == ["1 / 3 slices", "2 / 3 slices",
                                                        "3 / 3 slices"]
    assert panel.bar.maximum() == 3 and panel.bar.value() == 3
    assert not panel.cancel_button.isEnabled()


def test_offline_load_says_what_to_do(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    import socket

    with socket.socket() as s:  # a local port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NAPARI_HQ_SAM_CACHE", str(tmp_path / "weights"))
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)[1]
    bar = widget.model_bar
    bar.model_combo.setCurrentText("vit_tiny")
    bar.load_button.click()
    wait_idle(qtbot, widget)
    text = widget.status.text()
    assert text.startswith("Error: No internet connection"), text
    assert "local checkpoint file…" in text and "sam_hq_vit_tiny.pth" in text
    assert "\n" not in text and len(text) < 300
    panel = widget.task_panel
    assert panel.details_button.isVisible() or not panel.details_button.isHidden()
    assert f"127.0.0.1:{port}" in panel._details  # the full text is kept for Details…
    assert viewer_session(viewer).model is None


def test_session_load_from_a_script(make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)[1]
    session = viewer_session(viewer)
    assert viewer_session(viewer) is session
    model = session.load("vit_tiny", checkpoint=tiny_checkpoint, device="cpu")
    assert session.model is model and widget.controller.model is model
    # the same choice again loads nothing new
    assert session.load("vit_tiny", checkpoint=tiny_checkpoint, device="cpu") is model
    assert np.isfinite(next(model.parameters()).detach().numpy()).all()


def test_embeddings_from_hqsam_embed_are_used_without_recomputing(
        make_napari_viewer, qtbot, tiny_checkpoint, nuclei3d, tmp_path):
    from napari_hq_sam.cli import main

    stack = nuclei3d[8:12]
    image_file = tmp_path / "stack.npy"
    np.save(image_file, stack)
    folder = tmp_path / "emb.zarr"
    assert main(["embed", str(image_file), "--model", "vit_tiny", "--checkpoint",
                 str(tiny_checkpoint), "--cache", str(folder), "--device", "cpu",
                 "--quiet"]) == 0
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)[1]
    choose_file(widget.model_bar, tiny_checkpoint)
    widget.model_bar.folder_edit.setText(str(folder))  # as a user picks the folder
    widget.model_bar.load_button.click()
    wait_idle(qtbot, widget)
    session = viewer_session(viewer)
    assert session.embedding_folder == folder and "emb.zarr" in session.describe()
    widget.prompt_layers_button.click()
    _, boxes = widget.controller.prompt_layers()
    for z in (1, 3):
        viewer.dims.set_current_step(0, z)
        boxes.add_rectangles(box(12, 10, 40, 42, lead=(z,)))
        widget.segment_button.click()
        wait_idle(qtbot, widget)
        assert "cached embedding" in widget.status.text(), widget.status.text()
    assert session.segmenter.computed == 0 and session.segmenter.reused == 2
    labels = viewer.layers["HQ-SAM labels"].data
    assert labels[1].any() and labels[3].any() and not labels[0].any()
