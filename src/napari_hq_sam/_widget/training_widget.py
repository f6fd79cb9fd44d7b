"""Dock widget: train the HQ branch on an image + Labels layer, and score against labels.

The widget only gathers values and calls the library (:func:`napari_hq_sam.training.train_hq`,
:func:`napari_hq_sam.evaluation.evaluate`, :mod:`napari_hq_sam.adapters`) in a
``thread_worker``; progress comes back through a Qt signal, cancel is a flag read
by the library's ``should_stop`` callable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..model_types import MODEL_TYPES


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(object)


class HQSamTrainingWidget(QWidget):
    """Train an HQ adapter on the current layers; evaluate mIoU/mBIoU against labels."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.model = None
        self._model_key = None
        self._stop = False
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    # -- view ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.model_combo = QComboBox()
        self.model_combo.addItems(MODEL_TYPES)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("official file (downloaded once)")
        self.adapter_edit = QLineEdit(str(Path.home() / "hqsam_adapter.pt"))
        self.steps_spin = _spin(1, 100_000, 300)
        self.batch_spin = _spin(1, 64, 4)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cuda", "mps", "cpu"])
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels (ground truth)", self.labels_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("Checkpoint", _with_browse(self.checkpoint_edit, self._browse_checkpoint))
        form.addRow("Adapter file", _with_browse(self.adapter_edit, self._browse_adapter))
        form.addRow("Steps", self.steps_spin)
        form.addRow("Objects per step", self.batch_spin)
        form.addRow("Device", self.device_combo)
        self.train_button = QPushButton("Train adapter")
        self.evaluate_button = QPushButton("Evaluate against labels")
        self.load_button = QPushButton("Load adapter")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.train_button.clicked.connect(self.start_training)
        self.evaluate_button.clicked.connect(self.start_evaluation)
        self.load_button.clicked.connect(self.start_loading_adapter)
        self.cancel_button.clicked.connect(self.cancel)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (self.train_button, self.evaluate_button, self.load_button,
                       self.cancel_button, self.progress_bar, self.status):
            layout.addWidget(widget)
        layout.addStretch()

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

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "HQ-SAM checkpoint", "", "*.pth *.pt")
        if path:
            self.checkpoint_edit.setText(path)

    def _browse_adapter(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Adapter file", self.adapter_edit.text(),
                                              "*.pt", options=QFileDialog.DontConfirmOverwrite)
        if path:
            self.adapter_edit.setText(path)

    # -- values gathered from the view ---------------------------------------------------------
    def _settings(self) -> dict:
        checkpoint = self.checkpoint_edit.text().strip() or None
        device = self.device_combo.currentText()
        return {"model_type": self.model_combo.currentText(), "checkpoint": checkpoint,
                "device": None if device == "auto" else device,
                "adapter": self.adapter_edit.text().strip(),
                "steps": self.steps_spin.value(), "batch_size": self.batch_spin.value()}

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        names = (self.image_combo.currentText(), self.labels_combo.currentText())
        if not all(names) or any(n not in self.viewer.layers for n in names):
            raise ValueError("Choose an image layer and a Labels layer with ground truth.")
        image = np.asarray(self.viewer.layers[names[0]].data)
        labels = np.asarray(self.viewer.layers[names[1]].data)
        return image, labels

    # -- actions -------------------------------------------------------------------------
    def start_training(self) -> None:
        """Train in a worker thread; the adapter file is written when it finishes."""
        self._start(_train_job, "Training")

    def start_evaluation(self) -> None:
        """Score the current model (trained, or base + adapter file if present)."""
        self._start(_evaluate_job, "Evaluating")

    def start_loading_adapter(self) -> None:
        """Load the adapter file into the model (to evaluate a saved adapter)."""
        self._start(_load_adapter_job, "Loading adapter")

    def cancel(self) -> None:
        """Ask the running job to stop after its current step."""
        self._stop = True
        self.status.setText("Cancelling…")

    def _start(self, job, title: str) -> None:
        if self.worker is not None:
            return
        try:
            data = self._data() if job is not _load_adapter_job else None
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        self._stop = False
        self._set_busy(True)
        self.status.setText(f"{title}…")
        self.worker = thread_worker(job)(self, self._settings(), data)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def should_stop(self) -> bool:
        """Cancel flag, read by the library from the worker thread."""
        return self._stop

    def report(self, phase: str, done: int, total: int) -> None:
        """Thread-safe progress: forwarded to the GUI thread."""
        self._relay.progressed.emit((phase, done, total))

    def _on_progress(self, value) -> None:
        phase, done, total = value
        self.progress_bar.setMaximum(max(total, 1))
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat(f"{phase} %v/%m")

    def _on_done(self, message: str) -> None:
        self.status.setText(message)

    def _on_error(self, exc) -> None:
        self.status.setText(f"Error: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        for button in (self.train_button, self.evaluate_button, self.load_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def ensure_model(self, settings: dict):
        """The model for ``settings`` (kept between runs; reloaded when they change)."""
        from ..loading import load_model

        key = (settings["model_type"], settings["checkpoint"], settings["device"])
        if self.model is None or key != self._model_key:
            self.model = load_model(key[0], key[1], device=key[2], progress=False)
            self._model_key = key
        return self.model

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self._stop = True
        self.viewer.layers.events.inserted.disconnect(self.refresh_layers)
        self.viewer.layers.events.removed.disconnect(self.refresh_layers)
        super().closeEvent(event)


# -- jobs: run in the worker thread, talk to the widget only through report/should_stop ------
def _train_job(widget: HQSamTrainingWidget, settings: dict, data) -> str:
    from ..adapters import save_adapter
    from ..training import TrainingConfig, train_hq

    if not settings["adapter"]:
        raise ValueError("Give an adapter file to write.")
    model = widget.ensure_model(settings)
    config = TrainingConfig(steps=settings["steps"], batch_size=settings["batch_size"])
    result = train_hq(model, [data], config, should_stop=widget.should_stop,
                      progress=lambda u: widget.report(u.phase, u.step, u.total))
    metrics = {"best_step": result.best_step, "steps_done": result.steps_done,
               "val": result.best_metrics, "val_initial": result.initial_metrics}
    if result.steps_done == 0:
        return "Cancelled before the first step; nothing saved."
    path = save_adapter(model, settings["adapter"], base_checkpoint=settings["checkpoint"],
                        training=config.to_dict(), metrics=metrics)
    init, best = result.initial_metrics, result.best_metrics
    return (f"{'Cancelled; ' if result.cancelled else ''}held-out mIoU {init['mIoU']:.3f} → "
            f"{best['mIoU']:.3f}, mBIoU {init['mBIoU']:.3f} → {best['mBIoU']:.3f} "
            f"(step {result.best_step}). Adapter saved to {path}.")


def _evaluate_job(widget: HQSamTrainingWidget, settings: dict, data) -> str:
    from ..evaluation import evaluate

    model = widget.ensure_model(settings)
    result = evaluate(model, *data, should_stop=widget.should_stop,
                      progress=lambda d, t: widget.report("evaluate", d, t))
    return (f"{'Cancelled; partial: ' if result.cancelled else ''}mIoU {result.mIoU:.4f}, "
            f"mBIoU {result.mBIoU:.4f} over {result.n_objects} objects.")


def _load_adapter_job(widget: HQSamTrainingWidget, settings: dict, data) -> str:
    from ..adapters import load_adapter

    model = widget.ensure_model(settings)
    load_adapter(model, settings["adapter"], base_checkpoint=settings["checkpoint"])
    return f"Adapter {settings['adapter']} loaded."


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


def _with_browse(edit: QLineEdit, callback) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit)
    button = QPushButton("…")
    button.clicked.connect(callback)
    row.addWidget(button)
    return box
