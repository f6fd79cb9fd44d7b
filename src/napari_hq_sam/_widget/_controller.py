"""GUI-thread glue of the segmentation widget: reads the controls, starts tasks, writes layers.

The controller never runs the model itself: it gathers the image, slice and
prompts from napari, hands them to a task of :mod:`._tasks` (engine calls) in a
:class:`~._runner.TaskRunner`, and writes what comes back into layers.
"""

from __future__ import annotations

import time

from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from . import _layers, _tasks
from ._context import current_index, gather_prompts, image_context
from ._runner import TaskRunner
from ._view import LOCAL_FILE, NEW_LABELS, NO_CHANNEL, SegmentView

LIVE_DELAY_MS = 150
SEGMENT_KEY, UNDO_KEY = "Shift-S", "Shift-U"
MAX_UNDO = 20  # writes kept for undo (a stack run's record holds its slices before and after)


class SegmentController:
    """Behaviour of the segmentation dock widget.

    Parameters
    ----------
    viewer : napari.Viewer
    view : SegmentView
    """

    def __init__(self, viewer, view: SegmentView):
        self.viewer, self.view = viewer, view
        self.model = None
        self.model_choice = None
        self.session = None  # engine segmenter + embedding cache, bound to the model
        self.history: list = []  # undo records, newest last
        self.last_click_to_mask: float | None = None  # seconds, prompt change -> preview
        self.prompts_changed_at: float | None = None
        self.runner = TaskRunner(self._on_busy, self.show_error)
        self._live_timer = QTimer(view)  # dies with the view: never fires into a deleted widget
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_DELAY_MS)
        self._live_timer.timeout.connect(self.run_live)
        self._live_pending = False
        self._prompt_disconnects: list = []
        from ._slice_actions import SliceActions
        from ._stack_actions import StackActions

        self.slices = SliceActions(self)
        self.stacks = StackActions(self)
        self._closed = False
        self._connect()
        self.refresh_layers()
        view.destroyed.connect(self.close)

    # -- wiring ----------------------------------------------------------------------------
    def _connect(self) -> None:
        v = self.view
        v.load_button.clicked.connect(lambda: self.ensure_model(None, force=True))
        v.browse_button.clicked.connect(self._browse)
        v.model_combo.currentTextChanged.connect(self._model_changed)
        v.prompt_layers_button.clicked.connect(self.add_prompt_layers)
        v.live_check.toggled.connect(self._live_toggled)
        v.segment_button.clicked.connect(self.slices.segment_and_commit)
        v.undo_button.clicked.connect(self.undo)
        v.refine_button.clicked.connect(self.slices.refine)
        v.stack_button.clicked.connect(self.stacks.segment_stack)
        v.propagate_button.clicked.connect(self.stacks.propagate)
        v.cancel_button.clicked.connect(self.runner.cancel)
        v.image_combo.currentTextChanged.connect(self._image_changed)
        v.channel_axis_combo.currentTextChanged.connect(self._channel_axis_changed)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.viewer.layers.events.moved.connect(self.refresh_layers)
        self.viewer.dims.events.current_step.connect(self._slice_changed)
        from ..device import available_devices

        v.device_combo.addItems(["auto", *available_devices()])
        self._model_changed(v.model_combo.currentText())

    def close(self, *_) -> None:
        """Unbind everything bound to the viewer (closeEvent, or the view's destruction)."""
        if self._closed:
            return
        self._closed = True
        self.runner.close()
        try:
            self._live_timer.stop()
        except RuntimeError:  # already deleted with the view
            pass
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self.refresh_layers)
        self.viewer.dims.events.current_step.disconnect(self._slice_changed)
        for disconnect in self._prompt_disconnects:
            disconnect()
        self._prompt_disconnects.clear()
        for layer in self.prompt_layers():
            if layer is not None and layer in self.viewer.layers:
                for key in (SEGMENT_KEY, UNDO_KEY):
                    layer.bind_key(key, None, overwrite=True)

    # -- layer choices -----------------------------------------------------------------------
    def refresh_layers(self, event=None) -> None:
        """Refill the image and labels boxes, keeping the current choices when possible."""
        from napari.layers import Image, Labels

        v = self.view
        images = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, Image)]
        labels = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, Labels)
                  and lyr.name != _layers.PREVIEW_NAME]
        _refill(v.image_combo, images)
        _refill(v.labels_combo, [NEW_LABELS, *labels])

    def _image_changed(self, name: str) -> None:
        layer = self._layer(name)
        combo = self.view.channel_axis_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(NO_CHANNEL)
        if layer is not None and layer.ndim > 2 and not layer.rgb:
            # only the first axis: napari aligns layers by their last axes, so the
            # labels (the image without its channel axis) line up with the image
            # only when the channel axis comes first
            combo.addItem("0")
        combo.blockSignals(False)
        self._channel_axis_changed(NO_CHANNEL)

    def _channel_axis_changed(self, text: str) -> None:
        layer = self.image_layer()
        spin = self.view.channel_spin
        spin.setEnabled(text != NO_CHANNEL)
        if text != NO_CHANNEL and layer is not None:
            spin.setMaximum(layer.data.shape[int(text)] - 1)

    def _layer(self, name: str):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def image_layer(self):
        """The chosen image layer or None."""
        return self._layer(self.view.image_combo.currentText())

    def context(self):
        """:class:`~._context.ImageContext` of the chosen image, channel and contrast."""
        text = self.view.channel_axis_combo.currentText()
        axis = None if text in (NO_CHANNEL, "") else int(text)
        channel = self.view.channel_spin.value() if axis is not None else None
        return image_context(self.image_layer(), axis, channel)

    def index(self, ctx) -> tuple[int, ...]:
        """The displayed slice of the chosen image."""
        return current_index(self.viewer, ctx)

    def prompt_layers(self):
        """``(points, boxes)``: the widget's prompt layers, None where missing."""
        return (_layers._layer(self.viewer, _layers.POINTS_NAME, "Points"),
                _layers._layer(self.viewer, _layers.BOXES_NAME, "Shapes"))

    def prompts(self, index: tuple[int, ...] | None = None):
        """Object prompts of slice ``index`` (or all slices) from the prompt layers."""
        return gather_prompts(*self.prompt_layers(), index)

    def labels_layer(self, ctx, create: bool = True):
        """The chosen labels layer, or a new one with the image's labels shape."""
        layer = self._layer(self.view.labels_combo.currentText())
        if layer is None and create:
            layer = _layers.add_labels_layer(self.viewer, ctx.layout.labels_shape,
                                             scale=ctx.scale, translate=ctx.translate)
            self.view.labels_combo.setCurrentText(layer.name)
        if layer is not None and tuple(layer.data.shape) != tuple(ctx.layout.labels_shape):
            raise ValueError(f"Labels layer '{layer.name}' has shape {layer.data.shape}, but "
                             f"the image needs {ctx.layout.labels_shape}: choose another layer "
                             f"or '{NEW_LABELS}'.")
        return layer

    # -- prompt layers -----------------------------------------------------------------------
    def add_prompt_layers(self) -> None:
        """Create the points and boxes layers for the chosen image (keeps existing ones)."""
        try:
            ctx = self.context()
            ndim = len(ctx.layout.labels_shape)
            boxes = _layers.make_boxes_layer(self.viewer, ndim, ctx.scale, ctx.translate)
            points = _layers.make_points_layer(self.viewer, ndim, ctx.scale, ctx.translate)
        except ValueError as exc:
            self.show_error(exc)
            return
        for disconnect in self._prompt_disconnects:
            disconnect()
        self._prompt_disconnects = [_layers.connect_changes(layer, self.prompts_changed)
                                    for layer in (points, boxes)]
        for layer in (points, boxes):
            layer.bind_key(SEGMENT_KEY, self._segment_key, overwrite=True)
            layer.bind_key(UNDO_KEY, self._undo_key, overwrite=True)
        self.viewer.layers.selection.active = points
        self.set_status("Click positive points (T toggles negative) in 'HQ-SAM points', or "
                        "drag boxes in 'HQ-SAM boxes'; Shift+S segments the slice.")

    def _segment_key(self, layer=None) -> None:
        if not self._closed:
            self.slices.segment_and_commit()

    def _undo_key(self, layer=None) -> None:
        if not self._closed:
            self.undo()

    # -- model --------------------------------------------------------------------------------
    def _model_changed(self, text: str) -> None:
        local = text == LOCAL_FILE
        self.view.checkpoint_edit.setEnabled(local)
        self.view.browse_button.setEnabled(local)

    def _browse(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.view, "HQ-SAM checkpoint", "",
                                              "PyTorch checkpoints (*.pth *.pt);;All files (*)")
        if path:
            self.view.checkpoint_edit.setText(path)

    def choice(self) -> _tasks.ModelChoice:
        """The model the controls ask for."""
        v = self.view
        text = v.model_combo.currentText()
        if text == LOCAL_FILE:
            path = v.checkpoint_edit.text().strip()
            if not path:
                raise ValueError("Choose a checkpoint file (the '…' button) or an official model.")
            return _tasks.ModelChoice(None, path, v.device_combo.currentText(),
                                      v.precision_combo.currentText())
        return _tasks.ModelChoice(text, None, v.device_combo.currentText(),
                                  v.precision_combo.currentText())

    def ensure_model(self, then=None, force: bool = False) -> None:
        """Load the chosen model in a worker (if not loaded yet), then call ``then()``."""
        if self.runner.busy:
            self.set_status("Still working on the last task: wait for it or press Cancel.")
            return
        try:
            choice = self.choice()
        except ValueError as exc:
            self.show_error(exc)
            return
        if self.model is not None and choice == self.model_choice and not force:
            if then is not None:
                then()
            return

        def done(session):
            self.model, self.model_choice, self.session = session.model, choice, session
            device = next(session.model.parameters()).device
            loaded = f"{session.model.model_type} on {device}, {session.model.precision}"
            self.view.model_status.setText(f"loaded: {loaded}")
            self.set_status(f"Model {loaded} ready ({choice.describe()}).")
            if then is not None:
                then()

        self.model, self.session = None, None
        self.view.model_status.setText("loading…")
        self.runner.start(_tasks.load_model_task(choice),
                          desc=f"Loading HQ-SAM {choice.describe()}", on_done=done)

    # -- live mode, undo, status ----------------------------------------------------------------
    def prompts_changed(self) -> None:
        """Prompt layers changed: schedule a live re-run if live mode is on."""
        if not self._closed and self.view.live_check.isChecked():
            self.prompts_changed_at = time.perf_counter()
            self._live_timer.start()

    def _slice_changed(self, event=None) -> None:
        """Another slice is shown: in live mode, preview its prompts (or clear the preview)."""
        if not self._closed and self.view.live_check.isChecked():
            self._live_timer.start()

    def _live_toggled(self, on: bool) -> None:
        if on:
            self._live_timer.start()
        else:
            _layers.clear_preview(self.viewer)

    def run_live(self) -> None:
        """Re-run the current slice into the preview layer (coalesces while busy)."""
        if self._closed or not self.view.live_check.isChecked():
            return
        if self.runner.busy:
            self._live_pending = True
            return
        self.slices.preview()

    def push_undo(self, record) -> None:
        """Remember a write so that :meth:`undo` can take it back."""
        self.history.append(record)
        del self.history[:-MAX_UNDO]
        self.view.undo_button.setEnabled(not self.runner.busy)

    def undo(self) -> None:
        """Take back the last write into a labels layer (and restore its prompts)."""
        if self.runner.busy:
            return
        if not self.history:
            self.set_status("Nothing to undo.")
            return
        record = self.history.pop()
        record.undo(self)
        self.set_status(f"Undid: {record.description}.")

    def _on_busy(self, desc: str | None) -> None:
        for button in self.view.action_buttons():
            button.setEnabled(desc is None)
        self.view.cancel_button.setEnabled(desc is not None)
        if desc is not None:
            self.set_status(f"{desc}…")
            return
        if self.model is None:
            self.view.model_status.setText("no model loaded")
        if self._live_pending:
            self._live_pending = False
            self._live_timer.start()

    def set_status(self, text: str) -> None:
        """Show ``text`` under the controls."""
        self.view.status.setText(text)

    def show_error(self, exc) -> None:
        """Report an error clearly without raising: status line + napari notification."""
        message = str(exc) or type(exc).__name__
        self.set_status(f"Error: {message}")
        show_error(f"HQ-SAM: {message}")


def _refill(combo, names: list[str]) -> None:
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
    if combo.currentText() != current:
        combo.currentTextChanged.emit(combo.currentText())
