"""Dock widget: train the HQ branch on an image + Labels layer, and score against labels.

The widget only gathers values and calls the library (:func:`napari_hq_sam.training.train_hq`,
:func:`napari_hq_sam.evaluation.evaluate`, :mod:`napari_hq_sam.adapters`) in a
``thread_worker`` through a :class:`~._runner.TaskRunner` (progress with time left,
Cancel). The model is the viewer's, chosen in the shared model bar: training changes
its HQ branch in place, so afterwards every HQ-SAM widget segments with the trained
adapter (and the embedding cache starts anew, as the HQ features depend on it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from ..adapters import check_adapter_output
from ..errors import InputError
from ._dock import row
from ._plugin_dock import PluginDock


class HQSamTrainingWidget(PluginDock):
    """Train an HQ adapter on the current layers; evaluate mIoU/mBIoU against labels."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    # -- view ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.adapter_edit = QLineEdit(str(Path.home() / "hqsam_adapter.pt"))
        self.steps_spin = _spin(1, 100_000, 300)
        self.batch_spin = _spin(1, 64, 4)
        self.train_button = QPushButton("Train adapter")
        self.evaluate_button = QPushButton("Evaluate against labels")
        box = QGroupBox("Train and evaluate")
        form = QFormLayout(box)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels (ground truth)", self.labels_combo)
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_adapter)
        form.addRow("Adapter to write", row(self.adapter_edit, browse))
        form.addRow("Steps", self.steps_spin)
        form.addRow("Objects per step", self.batch_spin)
        form.addRow(self.train_button)
        form.addRow(self.evaluate_button)
        self.train_button.clicked.connect(self.start_training)
        self.evaluate_button.clicked.connect(self.start_evaluation)
        self.add_section(box)
        self.finish()

    def refresh_layers(self, event=None) -> None:
        """Refill the layer choices, keeping the current ones when still present."""
        from napari.layers import Image, Labels

        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            current = combo.currentText()
            combo.clear()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)

    def _browse_adapter(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Adapter file", self.adapter_edit.text(),
                                              "*.pt", options=QFileDialog.DontConfirmOverwrite)
        if path:
            self.adapter_edit.setText(path)

    # -- values gathered from the view ---------------------------------------------------------
    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        names = (self.image_combo.currentText(), self.labels_combo.currentText())
        if not all(names) or any(n not in self.viewer.layers for n in names):
            raise InputError("Choose an image layer and a Labels layer with ground truth.")
        image = np.asarray(self.viewer.layers[names[0]].data)
        labels = np.asarray(self.viewer.layers[names[1]].data)
        return image, labels

    # -- actions -------------------------------------------------------------------------
    def start_training(self) -> None:
        """Train in a worker thread; the adapter file is written when it finishes."""
        settings = {"adapter": self.adapter_edit.text().strip(),
                    "steps": self.steps_spin.value(), "batch_size": self.batch_spin.value()}
        try:
            if not settings["adapter"]:
                raise InputError("Give an adapter file to write.")
            check_adapter_output(settings["adapter"], overwrite=True)  # before any training
        except (InputError, OSError) as exc:
            self.task_panel.show_error(exc)
            return
        self._start(lambda data: _train_task(self.session, settings, data), "Training",
                    "steps")

    def start_evaluation(self) -> None:
        """Score the viewer's model (with its adapter, if any) against the labels."""
        self._start(lambda data: _evaluate_task(self.session, data), "Evaluating", "slices")

    def cancel(self) -> None:
        """Ask the running job to stop after its current step."""
        self.runner.cancel()

    def _start(self, make_task, title: str, unit: str) -> None:
        if self.runner.busy:
            return
        try:
            data = self._data()
        except InputError as exc:
            self.task_panel.show_error(exc)
            return

        def start():
            self.runner.start(make_task(data), desc=title, unit=unit,
                              on_done=self.task_panel.set_status)

        self.model_bar.load(start)

    def busy_buttons(self) -> list[QPushButton]:
        return [self.train_button, self.evaluate_button]

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self.close_dock()
        self.viewer.layers.events.inserted.disconnect(self.refresh_layers)
        self.viewer.layers.events.removed.disconnect(self.refresh_layers)
        super().closeEvent(event)


# -- tasks: run in the worker thread, talk to the widget only through progress/should_stop ----
def _train_task(session, settings: dict, data):
    def task(progress, should_stop) -> str:
        from ..adapters import save_adapter
        from ..training import TrainingConfig, train_hq

        config = TrainingConfig(steps=settings["steps"], batch_size=settings["batch_size"])
        with session.lock:
            model, choice = session.require_model(), session.choice
            result = train_hq(model, [data], config, should_stop=should_stop,
                              progress=lambda u: progress(u.step, u.total))
            if result.steps_done == 0:
                return "Cancelled before the first step; nothing saved."
            metrics = {"best_step": result.best_step, "steps_done": result.steps_done,
                       "val": result.best_metrics, "val_initial": result.initial_metrics}
            path = save_adapter(model, settings["adapter"], base_checkpoint=choice.checkpoint,
                                training=config.to_dict(), metrics=metrics)
            # the HQ branch changed: the session (and its cache signature) now name the adapter
            session.set_model(model, replace(choice, adapter=str(path)))
        init, best = result.initial_metrics, result.best_metrics
        return (f"{'Cancelled; ' if result.cancelled else ''}held-out mIoU {init['mIoU']:.3f} → "
                f"{best['mIoU']:.3f}, mBIoU {init['mBIoU']:.3f} → {best['mBIoU']:.3f} "
                f"(step {result.best_step}). Adapter saved to {path}; every HQ-SAM widget "
                "now uses it.")

    return task


def _evaluate_task(session, data):
    def task(progress, should_stop) -> str:
        from ..evaluation import evaluate

        with session.lock:
            result = evaluate(session.require_model(), *data, should_stop=should_stop,
                              progress=progress)
        return (f"{'Cancelled; partial: ' if result.cancelled else ''}mIoU {result.mIoU:.4f}, "
                f"mBIoU {result.mBIoU:.4f} over {result.n_objects} objects.")

    return task


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin
