"""The controls of the segmentation dock widget: layout only, no behaviour."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ._dock import Fold, row, scrolling_layout
from ._task_panel import TaskPanel

NEW_LABELS = "(new labels layer)"
MIN_TILE, MAX_TILE = 256, 4096  # tile sides offered; the engine accepts from 64
NO_CHANNEL = "none"
THIS_SLICE, ALL_SLICES = "on this slice", "on all slices"


class SegmentView(QWidget):
    """Dock-widget controls: model bar, image, prompts, output, stack, then the task panel.

    The model bar needs the controller's runner, so :meth:`set_model_bar` puts it in
    place once the controller exists.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = scrolling_layout(self)
        self._layout.addWidget(self._image_box())
        self._layout.addWidget(self._prompt_box())
        self._layout.addWidget(self._output_box())
        self._layout.addWidget(self._stack_box())
        self._layout.addWidget(self._tiles_fold())
        self.task_panel = TaskPanel()
        self.task_panel.set_status("Choose an image layer and load a model.")
        self.cancel_button = self.task_panel.cancel_button
        self.status = self.task_panel.status
        self._layout.addWidget(self.task_panel)
        self._layout.addStretch(1)
        self.model_bar = None

    def set_model_bar(self, bar: QWidget) -> None:
        """Put the shared model bar at the top."""
        self.model_bar = bar
        self._layout.insertWidget(0, bar)

    def _image_box(self) -> QGroupBox:
        box = QGroupBox("Image")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("2D (YX), 3D (ZYX), 4D (TZYX) or RGB image to segment.")
        self.channel_axis_combo = QComboBox()
        self.channel_axis_combo.addItem(NO_CHANNEL)
        self.channel_axis_combo.setToolTip(
            "Axis of the layer that holds channels, if any. Only the first axis (C, Z, Y, X): "
            "napari lines layers up by their last axes, so labels without the channel axis "
            "match the image only then. Move another channel axis first (np.moveaxis) or "
            "open the file with napari's channel_axis, or use `hqsam segment --channel-axis`.")
        self.channel_spin = QSpinBox()
        self.channel_spin.setToolTip("Channel to segment along the channel axis.")
        form.addRow("Layer", self.image_combo)
        form.addRow("Channel axis", row(self.channel_axis_combo, QLabel("Channel"),
                                         self.channel_spin))
        return box

    def _prompt_box(self) -> QGroupBox:
        box = QGroupBox("Prompts")
        form = QFormLayout(box)
        self.prompt_layers_button = QPushButton("Add prompt layers")
        self.prompt_layers_button.setToolTip(
            "Adds 'HQ-SAM points' (click; T toggles positive/negative) and 'HQ-SAM boxes' "
            "(drag rectangles, one per object).")
        self.live_check = QCheckBox("Live preview")
        self.live_check.setToolTip("Re-run the current slice whenever the prompts change; "
                                   "the result shows in the 'HQ-SAM preview' layer.")
        form.addRow(row(self.prompt_layers_button, self.live_check))
        return box

    def _output_box(self) -> QGroupBox:
        box = QGroupBox("Output")
        form = QFormLayout(box)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Labels layer that receives the objects (one id each).")
        self.overwrite_check = QCheckBox("Overwrite other objects")
        self.overwrite_check.setToolTip("Off: new objects only fill background pixels.")
        self.segment_button = QPushButton("Segment slice → labels")
        self.segment_button.setToolTip("Segment the current slice from its prompts and add "
                                       "the objects to the labels layer (Shift+S on a prompt "
                                       "layer).")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Take back the last write into the labels (Shift+U).")
        self.refine_spin = QSpinBox()
        self.refine_spin.setRange(0, 2**31 - 1)
        self.refine_spin.setSpecialValueText("selected")
        self.refine_spin.setToolTip("Object id to refine (0: the labels layer's selected label).")
        self.refine_button = QPushButton("Refine object")
        self.refine_button.setToolTip("Use the object's mask on this slice (with any prompts "
                                      "on it) as a mask prompt and replace it by the result.")
        self.refine_all_button = QPushButton("Refine all objects")
        self.refine_all_button.setToolTip(
            "Refine every object of the labels layer with HQ-SAM (its box and mask as the "
            "prompt), each keeping its id, in one undo step. Objects HQ-SAM loses (empty "
            "mask, predicted IoU below 'Min score', or IoU with the object below 'Min IoU') "
            "keep their mask and are named in the status line.")
        self.refine_scope_combo = QComboBox()
        self.refine_scope_combo.addItems([THIS_SLICE, ALL_SLICES])
        self.refine_scope_combo.setToolTip("Refine the displayed slice only, or every slice.")
        self.refine_iou_spin = QDoubleSpinBox()
        self.refine_iou_spin.setRange(0.0, 1.0)
        self.refine_iou_spin.setSingleStep(0.05)
        self.refine_iou_spin.setValue(0.5)
        self.refine_iou_spin.setToolTip("An object keeps its mask when HQ-SAM's mask overlaps "
                                        "it by an IoU below this (HQ-SAM found another "
                                        "object).")
        form.addRow("Labels", self.labels_combo)
        form.addRow(self.overwrite_check)
        form.addRow(row(self.segment_button, self.undo_button))
        form.addRow(row(QLabel("Object"), self.refine_spin, self.refine_button))
        form.addRow(row(self.refine_all_button, self.refine_scope_combo, QLabel("Min IoU"),
                        self.refine_iou_spin))
        return box

    def _stack_box(self) -> QGroupBox:
        box = QGroupBox("Stack")
        form = QFormLayout(box)
        self.stack_button = QPushButton("Segment all prompted slices")
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(-1.0, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip("Propagation stops where the predicted IoU score drops "
                                       "below this value or the mask vanishes (-1: only\n"
                                       "where it vanishes).")
        self.propagate_button = QPushButton("Propagate through z")
        self.propagate_button.setToolTip("Propagate the object (from the current slice's prompts, "
                                         "or the chosen object id) up and down the stack.")
        form.addRow(self.stack_button)
        form.addRow("Min score", row(self.threshold_spin, self.propagate_button))
        return box

    def _tiles_fold(self) -> Fold:
        box = QGroupBox()
        form = QFormLayout(box)
        self.tiles_check = QCheckBox("Native resolution (tiles)")
        self.tiles_check.setChecked(True)
        self.tiles_check.setToolTip(
            "On: a slice larger than a tile is cut into overlapping tiles read at full "
            "resolution, and each object is segmented in the tile that holds it.\n"
            "Off: every slice is resized to the model's 1024-pixel input (small objects "
            "of large images shrink or vanish).")
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(MIN_TILE, MAX_TILE)
        self.tile_spin.setSingleStep(128)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip("Side of a tile, halo included. 1024 (the model's input) "
                                  "keeps tiles at native resolution.")
        self.halo_spin = QSpinBox()
        self.halo_spin.setSingleStep(32)
        self.halo_spin.setSuffix(" px")
        self.halo_spin.setToolTip("Overlap on each side of a tile's core: at least the "
                                  "radius of the largest objects, so that an object prompted "
                                  "in a core is seen whole.")
        form.addRow(self.tiles_check)
        form.addRow("Tile", row(self.tile_spin, QLabel("Halo"), self.halo_spin))
        self.tiles_fold = Fold("Large images", box)
        return self.tiles_fold

    def action_buttons(self) -> list[QPushButton]:
        """Buttons disabled while a task runs."""
        return [self.segment_button, self.undo_button, self.refine_button,
                self.refine_all_button, self.stack_button, self.propagate_button]
