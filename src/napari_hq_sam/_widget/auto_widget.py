"""Dock widget "Segment everything": automatic HQ masks for a slice or a whole stack.

The widget only reads its controls and the image layer (in the GUI thread) and
runs :func:`napari_hq_sam.engine.everything.segment_everything` in a ``thread_worker``
through a :class:`~._runner.TaskRunner` (progress bar with time left, Cancel). The
model is the viewer's (:mod:`napari_hq_sam.session`), chosen in the model bar shared
with the other HQ-SAM widgets, and so are its embeddings: slices embedded there are
not embedded again. The result goes to a new Labels layer (one id per object), ready
to be edited with prompts.

The mode chooses the prompts: the official grid of points, one seed per blob of the
expected diameter found in each slice, or one seed per positive point of a Points
layer (:mod:`napari_hq_sam.engine.seeds`).
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
GRID, SEEDS_IMAGE, SEEDS_POINTS = ("Grid of points", "Seeds from the image",
                                   "Seeds from a points layer")


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
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([GRID, SEEDS_IMAGE, SEEDS_POINTS])
        self.points_layer_combo = QComboBox()
        # 0 shows "estimate": the diameter is then estimated per slice
        self.diameter_spin = _spin(QDoubleSpinBox(), 0.0, 10000.0, 0.0, 1.0)
        self.diameter_spin.setSpecialValueText("estimate")
        self.diameter_spin.setSuffix(" px")
        self.points_spin = _spin(QSpinBox(), 1, 128, d.points_per_side)
        self.iou_spin = _spin(QDoubleSpinBox(), 0.0, 1.0, d.pred_iou_thresh, 0.01)
        self.stability_spin = _spin(QDoubleSpinBox(), 0.0, 1.0, d.stability_score_thresh, 0.01)
        self.min_area_spin = _spin(QSpinBox(), 0, 100000, d.min_mask_region_area)
        self.stitch_check = QCheckBox("One id per object through z")
        self.run_button = QPushButton("Segment everything")
        box = QGroupBox("Segment everything")
        form = QFormLayout(box)
        for label, widget in (("Image", self.image_combo), ("Segment", self.scope_combo),
                              ("Prompts", self.mode_combo),
                              ("Seed points", self.points_layer_combo),
                              ("Object diameter", self.diameter_spin),
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
        self.mode_combo.currentTextChanged.connect(self._mode_changed)
        self._mode_changed()

    def _mode_changed(self, *_) -> None:
        mode = self.mode_combo.currentText()
        self.points_spin.setEnabled(mode == GRID)
        self.diameter_spin.setEnabled(mode != GRID)
        self.points_layer_combo.setEnabled(mode == SEEDS_POINTS)

    def refresh_layers(self, event=None) -> None:
        """Refill the image and seed-points boxes with the viewer's layers."""
        from napari.layers import Image, Points

        for combo, kind in ((self.image_combo, Image), (self.points_layer_combo, Points)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)

    # -- actions ---------------------------------------------------------------------------
    def config(self) -> AutoMaskConfig:
        """Parameters from the controls and the session's mask mode (others official)."""
        return AutoMaskConfig(points_per_side=self.points_spin.value(),
                              pred_iou_thresh=self.iou_spin.value(),
                              stability_score_thresh=self.stability_spin.value(),
                              min_mask_region_area=self.min_area_spin.value(),
                              hq_token_only=self.session.hq_token_only)

    def seeds(self, ctx):
        """The seed source of the chosen mode for the image ``ctx`` (None: the grid)."""
        from ..engine.prompt_tables import points_table
        from ..engine.seeds import GivenSeeds, ImageSeeds, seeds_from_table
        from ..errors import InputError

        mode = self.mode_combo.currentText()
        diameter = self.diameter_spin.value() or None
        if mode == GRID:
            return None
        if mode == SEEDS_IMAGE:
            return ImageSeeds(diameter)
        name = self.points_layer_combo.currentText()
        if not name:
            raise InputError("Add a Points layer with one point per object to seed from.")
        layer = self.viewer.layers[name]
        table = points_table(layer.data, layer.features)
        points = seeds_from_table(table.points, table.point_labels,
                                  len(ctx.layout.leading_shape))
        if not points:
            raise InputError(f"Points layer '{name}' has no positive points to seed from.")
        return GivenSeeds(points, diameter)

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
            seeds = self.seeds(ctx)
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
                                          progress=progress, should_stop=should_stop,
                                          seeds=seeds)

        what = "the whole stack" if whole and ctx.layout.leading_shape else \
            f"slice {slices[0][-1]}" if slices and slices[0] else "the image"
        unit = "point batches" if seeds is None else "steps"
        self.runner.start(task, desc=f"Segment everything in {what}", unit=unit,
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
        """Stop the run at its next batch of points or seeds; finished slices are kept."""
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
