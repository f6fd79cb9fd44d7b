"""Dock widget "Segment everything": automatic HQ masks for a slice or a whole stack.

The widget only reads its controls and the image layer (in the GUI thread) and
runs :func:`napari_hq_sam.engine.everything.segment_everything` in a ``thread_worker``
through a :class:`~._runner.TaskRunner` (progress bar with time left, Cancel). The
model is the viewer's (:mod:`napari_hq_sam.session`), chosen in the model bar shared
with the other HQ-SAM widgets, and so are its embeddings: slices embedded there are
not embedded again. The result goes to a new Labels layer (one id per object), ready
to be edited with prompts.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QSpinBox,
)

from ..automatic import AutoMaskConfig
from ._context import current_index, image_context
from ._layers import keep_selection
from ._plugin_dock import PluginDock
from ._text import count

CURRENT, STACK = "Current slice", "Whole stack"


class AutoSegmentWidget(PluginDock):
    """Segment everything in the current slice or the whole stack of an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self._build()
        events, callback, close_dock = (self.viewer.layers.events, self.refresh_layers,
                                        self.close_dock)
        events.inserted.connect(callback)
        events.removed.connect(callback)

        def unbind(*_):  # no reference to self: also runs once the widget is deleted
            close_dock()
            events.inserted.disconnect(callback)
            events.removed.disconnect(callback)

        self._unbind = unbind
        self.destroyed.connect(unbind)
        self.refresh_layers()

    # -- view ------------------------------------------------------------------------------
    def _build(self) -> None:
        d = AutoMaskConfig()
        self.image_combo = QComboBox()
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([CURRENT, STACK])
        self.points_spin = _spin(QSpinBox(), 1, 128, d.points_per_side)
        self.iou_spin = _spin(QDoubleSpinBox(), 0.0, 1.0, d.pred_iou_thresh, 0.01)
        self.stability_spin = _spin(QDoubleSpinBox(), 0.0, 1.0, d.stability_score_thresh, 0.01)
        self.min_area_spin = _spin(QSpinBox(), 0, 100000, d.min_mask_region_area)
        self.stitch_check = QCheckBox("One id per object through z")
        self.run_button = QPushButton("Segment everything")
        box = QGroupBox("Segment everything")
        form = QFormLayout(box)
        for label, widget in (("Image", self.image_combo), ("Segment", self.scope_combo),
                              ("Points per side", self.points_spin),
                              ("Min predicted IoU", self.iou_spin),
                              ("Min stability", self.stability_spin),
                              ("Min region area", self.min_area_spin),
                              ("Stitch", self.stitch_check)):
            form.addRow(label, widget)
        form.addRow(self.run_button)
        self.add_section(box)
        self.finish()
        self.run_button.clicked.connect(self.run)

    def refresh_layers(self, event=None) -> None:
        """Refill the image box with the viewer's image layers."""
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    # -- actions ---------------------------------------------------------------------------
    def config(self) -> AutoMaskConfig:
        """Parameters from the controls and the session's mask mode (others official)."""
        return AutoMaskConfig(points_per_side=self.points_spin.value(),
                              pred_iou_thresh=self.iou_spin.value(),
                              stability_score_thresh=self.stability_spin.value(),
                              min_mask_region_area=self.min_area_spin.value(),
                              hq_token_only=self.session.hq_token_only)

    def run(self) -> None:
        """Load the model if none is loaded, then segment in a worker thread."""
        if not self.runner.busy:
            self.model_bar.load(self._segment)

    def _segment(self) -> None:
        from ..engine.everything import segment_everything

        try:
            layer = self.viewer.layers[self.image_combo.currentText()] \
                if self.image_combo.currentText() else None
            ctx = image_context(layer)
        except (KeyError, ValueError) as exc:
            self.task_panel.show_error(exc)
            return
        whole = self.scope_combo.currentText() == STACK or not ctx.layout.leading_shape
        slices = None if whole else [current_index(self.viewer, ctx)]
        config, stitch, session = self.config(), self.stitch_check.isChecked(), self.session

        def task(progress, should_stop):
            with session.lock:
                session.require_model()
                return segment_everything(None, ctx.data, config, layout=ctx.layout,
                                          contrast_limits=ctx.contrast_limits, slices=slices,
                                          stitch=stitch, segmenter=session.segmenter,
                                          progress=progress, should_stop=should_stop)

        what = "the whole stack" if whole and ctx.layout.leading_shape else \
            f"slice {slices[0][-1]}" if slices and slices[0] else "the image"
        self.runner.start(task, desc=f"Segment everything in {what}", unit="point batches",
                          on_done=lambda run: self._add_result(run, ctx),
                          on_cancelled=lambda run: self._add_result(run, ctx))

    def _add_result(self, run, ctx) -> None:
        if not run.slices:
            self.status.setText("Cancelled before any slice was finished.")
            return
        name = f"{ctx.layer.name} everything"
        with keep_selection(self.viewer):  # the user's layer stays the selected one
            layer = self.viewer.add_labels(run.labels, name=name, scale=ctx.scale,
                                           translate=ctx.translate)
        n = len(run.slices)
        state = f"cancelled; kept {count(n, 'finished slice')}" if run.cancelled \
            else count(n, "slice")
        self.status.setText(f"{count(run.objects, 'object')} in '{layer.name}' ({state}).")

    def cancel(self) -> None:
        """Stop the run at its next point batch; finished slices are kept."""
        self.runner.cancel()

    def busy_buttons(self) -> list[QPushButton]:
        return [self.run_button]

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
