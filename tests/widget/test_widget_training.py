"""The training dock widget: trains in a worker thread, saves the adapter, evaluates."""

from __future__ import annotations

import pytest
from widget_utils import choose_file

from napari_hq_sam.adapters import read_adapter


@pytest.fixture()
def widget(make_napari_viewer, nuclei2d, nuclei2d_labels, tiny_checkpoint, tmp_path):
    from napari_hq_sam._widget.training_widget import HQSamTrainingWidget

    viewer = make_napari_viewer()
    viewer.add_image(nuclei2d[:64, :64], name="nuclei")
    viewer.add_labels(nuclei2d_labels[:64, :64], name="truth")
    w = HQSamTrainingWidget(viewer)
    choose_file(w.model_bar, tiny_checkpoint)
    w.adapter_edit.setText(str(tmp_path / "w.pt"))
    w.steps_spin.setValue(1)
    w.batch_spin.setValue(2)
    return w


def test_train_then_evaluate_in_worker(widget, qtbot, tmp_path):
    assert widget.image_combo.currentText() == "nuclei"
    assert widget.labels_combo.currentText() == "truth"
    widget.start_training()
    assert not widget.train_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=300_000)
    assert "Adapter saved" in widget.status.text(), widget.status.text()
    assert widget.task_panel.bar.value() == widget.task_panel.bar.maximum() == 1
    assert widget.task_panel.counts.text().startswith("1 / 1 steps")
    assert read_adapter(tmp_path / "w.pt").metrics["steps_done"] == 1
    widget.start_evaluation()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=300_000)
    assert "mIoU" in widget.status.text() and "objects" in widget.status.text()
    assert widget.train_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_cancel_before_the_first_step(widget, qtbot, tmp_path):
    widget.session.load(None, widget.model_bar.checkpoint_edit.text(), "cpu")
    widget.start_training()
    widget.cancel()  # before the worker reaches the first step
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=300_000)
    assert widget.status.text() == "Cancelled before the first step; nothing saved."
    assert not (tmp_path / "w.pt").exists()


def test_needs_layers(make_napari_viewer):
    from napari_hq_sam._widget.training_widget import HQSamTrainingWidget

    w = HQSamTrainingWidget(make_napari_viewer())
    w.start_training()
    assert not w.runner.busy and "Choose an image layer" in w.status.text()


def test_unwritable_adapter_is_refused_before_training(widget, tmp_path):
    (tmp_path / "a_folder.pt").mkdir()
    widget.adapter_edit.setText(str(tmp_path / "a_folder.pt"))
    widget.start_training()
    assert not widget.runner.busy  # nothing started: no model load, no training
    assert widget.status.text().startswith("Error:") and "a_folder.pt" in widget.status.text()
