"""Dock widget "Segment everything": automatic HQ masks for a slice or a whole stack.

The widget only reads its controls and the image layer (in the GUI thread) and
runs :func:`napari_hq_sam.engine.everything.segment_everything` in a ``thread_worker``
through a :class:`~._runner.TaskRunner` (progress bar, cancel), as the segmentation
widget does. The model is loaded by the segmentation widget's task and its embeddings
go to the same in-memory cache (:func:`~._tasks.shared_cache`), so slices embedded
there with the same weights and precision are not embedded again. The result goes
to a new Labels layer (one id per object), ready to be edited with prompts.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
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

from ..automatic import AutoMaskConfig
from ..model_types import MODEL_TYPES
from ._context import current_index, image_context
from ._runner import TaskRunner
from ._tasks import ModelChoice, Session, load_model_task

CURRENT, STACK = "current slice", "whole stack"


class AutoSegmentWidget(QWidget):
    """Segment everything in the current slice or the whole stack of an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: Session | None = None
        self._choice: ModelChoice | None = None
        self.runner = TaskRunner(self._on_busy, self._on_error)
        self._build()
        self.runner.progressed.connect(self._on_progress)
        events, callback, runner = self.viewer.layers.events, self.refresh_layers, self.runner
        events.inserted.connect(callback)
        events.removed.connect(callback)

        def unbind(*_):  # no reference to self: also runs once the widget is deleted
            runner.close()
            events.inserted.disconnect(callback)
            events.removed.disconnect(callback)

        self._unbind = unbind
        self.destroyed.connect(unbind)
        self.refresh_layers()

    # -- view ------------------------------------------------------------------------------
    def _build(self) -> None:
        d = AutoMaskConfig()
        self.image_combo, self.model_combo = QComboBox(), QComboBox()
        self.model_combo.addItems(MODEL_TYPES)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("official weights (or a local .pth file)")
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([CURRENT, STACK])
        self.points_spin = _spin(QSpinBox(), 1, 128, d.points_per_side)
        self.iou_spin = _spin(QDoubleSpinBox(), 0.0, 1.0, d.pred_iou_thresh, 0.01)
        self.stability_spin = _spin(QDoubleSpinBox(), 0.0, 1.0, d.stability_score_thresh, 0.01)
        self.min_area_spin = _spin(QSpinBox(), 0, 100000, d.min_mask_region_area)
        self.stitch_check = QCheckBox("one id per object through z")
        self.run_button, self.cancel_button = QPushButton("Segment everything"), \
            QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar, self.status = QProgressBar(), QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        for label, widget in (("image", self.image_combo), ("model", self.model_combo),
                              ("checkpoint", self.checkpoint_edit),
                              ("segment", self.scope_combo),
                              ("points per side", self.points_spin),
                              ("min predicted IoU", self.iou_spin),
                              ("min stability", self.stability_spin),
                              ("min region area", self.min_area_spin),
                              ("stitch", self.stitch_check)):
            form.addRow(label, widget)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    def refresh_layers(self, event=None) -> None:
        """Refill the image box with the viewer's image layers."""
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    # -- model -----------------------------------------------------------------------------
    def choice(self) -> ModelChoice:
        """The model the controls ask for."""
        path = self.checkpoint_edit.text().strip() or None
        return ModelChoice(self.model_combo.currentText(), path)

    # -- actions ---------------------------------------------------------------------------
    def config(self) -> AutoMaskConfig:
        """Parameters from the controls (others keep the official defaults)."""
        return AutoMaskConfig(points_per_side=self.points_spin.value(),
                              pred_iou_thresh=self.iou_spin.value(),
                              stability_score_thresh=self.stability_spin.value(),
                              min_mask_region_area=self.min_area_spin.value())

    def run(self) -> None:
        """Load the model if needed, then segment in a worker thread."""
        if self.runner.busy:
            return
        choice = self.choice()
        if self.session is not None and choice == self._choice:
            self._segment()
            return

        def loaded(session):
            self.session, self._choice = session, choice
            self._segment()

        self.runner.start(load_model_task(choice), desc=f"Loading HQ-SAM {choice.describe()}",
                          on_done=loaded)

    def _segment(self) -> None:
        from ..engine.everything import segment_everything

        try:
            layer = self.viewer.layers[self.image_combo.currentText()] \
                if self.image_combo.currentText() else None
            ctx = image_context(layer)
        except (KeyError, ValueError) as exc:
            self._on_error(exc)
            return
        whole = self.scope_combo.currentText() == STACK or not ctx.layout.leading_shape
        slices = None if whole else [current_index(self.viewer, ctx)]
        config, stitch, segmenter = self.config(), self.stitch_check.isChecked(), \
            self.session.segmenter

        def task(progress, should_stop):
            return segment_everything(None, ctx.data, config, layout=ctx.layout,
                                      contrast_limits=ctx.contrast_limits, slices=slices,
                                      stitch=stitch, segmenter=segmenter, progress=progress,
                                      should_stop=should_stop)

        what = "the whole stack" if whole and ctx.layout.leading_shape else \
            f"slice {slices[0]}" if slices else "the image"
        self.runner.start(task, desc=f"Segment everything in {what}",
                          on_done=lambda run: self._add_result(run, ctx),
                          on_cancelled=lambda run: self._add_result(run, ctx))

    def _add_result(self, run, ctx) -> None:
        if not run.slices:
            self.status.setText("Cancelled before any slice was finished.")
            return
        name = f"{ctx.layer.name} everything"
        layer = self.viewer.add_labels(run.labels, name=name, scale=ctx.scale,
                                       translate=ctx.translate)
        state = f"cancelled; kept {len(run.slices)} finished slice(s)" if run.cancelled \
            else f"{len(run.slices)} slice(s)"
        self.status.setText(f"{run.objects} objects in '{layer.name}' ({state}).")

    def cancel(self) -> None:
        """Stop the run at its next point batch; finished slices are kept."""
        self.runner.cancel()

    # -- runner callbacks --------------------------------------------------------------------
    def _on_busy(self, desc: str | None) -> None:
        self.run_button.setEnabled(desc is None)
        self.cancel_button.setEnabled(desc is not None)
        if desc is not None:
            self.progress_bar.setValue(0)
            self.status.setText(f"{desc}…")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setMaximum(max(total, 1))
        self.progress_bar.setValue(done)

    def _on_error(self, exc) -> None:
        self.status.setText(f"Error: {exc}")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self._unbind()
        super().closeEvent(event)


def _spin(box, lo, hi, value, step=None):
    box.setRange(lo, hi)
    if step is not None:
        box.setSingleStep(step)
        box.setDecimals(2)
    box.setValue(value)
    return box
