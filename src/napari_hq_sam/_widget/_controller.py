"""GUI-thread glue of the segmentation widget: reads the controls, starts tasks, writes layers.

The controller never runs the model itself: it gathers the image, slice and
prompts from napari, hands them to a task of :mod:`._tasks` (engine calls) in a
:class:`~._runner.TaskRunner`, and writes what comes back into layers.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer

from ..session import viewer_session
from . import _layers
from ._context import current_index, gather_prompts, image_context
from ._model_bar import ModelBar
from ._runner import TaskRunner
from ._text import shape_words
from ._tiles_control import TilesControl
from ._view import NEW_LABELS, NO_CHANNEL, SegmentView

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
        self.session = viewer_session(viewer)  # the model, shared with the other widgets
        self.history: list = []  # undo records, newest last
        self.last_click_to_mask: float | None = None  # seconds, prompt change -> preview
        self.prompts_changed_at: float | None = None
        self.runner = TaskRunner(view.task_panel, self._on_busy)
        self.model_bar = ModelBar(viewer, self.runner)
        view.set_model_bar(self.model_bar)
        self.tiles = TilesControl(view, self.session)  # "Large images": the session's tiling
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
        v.prompt_layers_button.clicked.connect(self.add_prompt_layers)
        v.live_check.toggled.connect(self._live_toggled)
        v.segment_button.clicked.connect(self.slices.segment_and_commit)
        v.undo_button.clicked.connect(self.undo)
        v.refine_button.clicked.connect(self.slices.refine)
        v.stack_button.clicked.connect(self.stacks.segment_stack)
        v.propagate_button.clicked.connect(self.stacks.propagate)
        v.image_combo.currentTextChanged.connect(self._image_changed)
        v.channel_axis_combo.currentTextChanged.connect(self._channel_axis_changed)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.viewer.layers.events.moved.connect(self.refresh_layers)
        self.viewer.dims.events.current_step.connect(self._slice_changed)

    @property
    def model(self):
        """The viewer's loaded HQSam (shared by every HQ-SAM widget), or None."""
        return self.session.model

    def close(self, *_) -> None:
        """Unbind everything bound to the viewer (closeEvent, or the view's destruction)."""
        if self._closed:
            return
        self._closed = True
        self.runner.close()
        self.model_bar.close()
        self.tiles.close()
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
        for layer in self.viewer.layers:
            _layers.unbind_keys(layer, self._keys(toggle=True))

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
        added = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        if isinstance(added, Image) and added.metadata.get(_layers.ROLE_KEY) == _layers.SERIES:
            v.image_combo.setCurrentText(added.name)  # the image series' next image

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
        self._follow_image()

    def _follow_image(self) -> None:
        """Another image (or channel axis) is chosen: prompt layers and labels follow it.

        Existing prompt layers are parked under their image's name and this image's
        come back (or are made); a labels choice made for another image, or none, is
        replaced by this image's labels layer or a new one; the preview is cleared.
        """
        if self._closed:
            return
        try:
            ctx = self.context()
        except ValueError:  # no image (yet): nothing to follow
            return
        self._bind_prompt_layers(ctx, create=False)
        combo = self.view.labels_combo
        chosen = self._layer(combo.currentText())
        shape = tuple(ctx.layout.labels_shape)
        if chosen is None or (tuple(chosen.data.shape) != shape or
                              _layers.tied_image(chosen) not in (None, ctx.layer.name)):
            own = _layers.tied_layer(self.viewer, _layers.LABELS, ctx.layer.name, "Labels")
            fits = own is not None and tuple(own.data.shape) == shape
            combo.setCurrentText(own.name if fits else NEW_LABELS)
        _layers.clear_preview(self.viewer)

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
            image = ctx.layer.name
            name = _layers.RESULT_NAME
            if name in self.viewer.layers:  # another image's labels
                name = f"{name} [{image}]"
            layer = _layers.add_labels_layer(self.viewer, ctx.layout.labels_shape, name,
                                             ctx.scale, ctx.translate, image=image)
            self.view.labels_combo.setCurrentText(layer.name)
        if layer is not None and tuple(layer.data.shape) != tuple(ctx.layout.labels_shape):
            raise ValueError(f"Labels layer '{layer.name}' is {shape_words(layer.data.shape)} "
                             f"pixels, but the image needs "
                             f"{shape_words(ctx.layout.labels_shape)}: choose another layer "
                             f"or '{NEW_LABELS}'.")
        if layer is not None:
            self.adopt(layer)
        return layer

    # -- prompt layers -----------------------------------------------------------------------
    def add_prompt_layers(self) -> None:
        """Bind the points and boxes layers to the chosen image and select the points.

        Keeps this image's existing prompt layers, brings back the ones parked when
        another image was chosen, or makes new ones; another image's are parked.
        """
        try:
            ctx = self.context()
        except ValueError as exc:
            self.show_error(exc)
            return
        points, _ = self._bind_prompt_layers(ctx, create=True)
        self.viewer.layers.selection.active = points  # asked for: the user clicks next
        points.mode = "add"
        self.set_status("Click positive points (T toggles negative) in 'HQ-SAM points', or "
                        "drag boxes in 'HQ-SAM boxes'; Shift+S segments the slice.")

    def _bind_prompt_layers(self, ctx, create: bool):
        """``(points, boxes)`` of ``ctx``'s image through :func:`_layers.follow_image`, bound.

        Their changes drive live mode and the widget's keys work on them; parked
        layers lose both. If a parked layer was the active one, its successor is.
        """
        active = self.viewer.layers.selection.active
        points, boxes, parked = _layers.follow_image(
            self.viewer, ctx.layer.name, len(ctx.layout.labels_shape), ctx.scale,
            ctx.translate, create=create)
        for layer in parked:
            _layers.unbind_keys(layer, self._keys(toggle=True))
        for disconnect in self._prompt_disconnects:
            disconnect()
        bound = [layer for layer in (points, boxes) if layer is not None]
        self._prompt_disconnects = [_layers.connect_changes(layer, self.prompts_changed)
                                    for layer in bound]
        for layer in bound:
            self.adopt(layer)
        successor = {_layers.POINTS: points, _layers.BOXES: boxes}.get(parked.get(active))
        if successor is not None:
            self.viewer.layers.selection.active = successor
        return points, boxes

    def adopt(self, layer, toggle: bool = False) -> None:
        """Make the widget's keys work while ``layer`` is selected (``T`` too if ``toggle``).

        Called for every layer the widget writes to or reads prompts from; :meth:`close`
        unbinds them again. The points layer has its own ``T``.
        """
        _layers.bind_keys(layer, self._keys(toggle))

    def _keys(self, toggle: bool = False) -> dict:
        keys = {SEGMENT_KEY: self._segment_key, UNDO_KEY: self._undo_key}
        if toggle:
            keys[_layers.TOGGLE_KEY] = self._toggle_key
        return keys

    def _segment_key(self, layer=None) -> None:
        if not self._closed:
            self.slices.segment_and_commit()

    def _undo_key(self, layer=None) -> None:
        if not self._closed:
            self.undo()

    def _toggle_key(self, layer=None) -> None:
        """``T`` outside the points layer: toggle the label of the next points all the same."""
        points = self.prompt_layers()[0]
        if not self._closed and points is not None:
            _layers.toggle_point_label(points)
            label = points.feature_defaults[_layers.LABEL_FEATURE].iloc[0]
            self.set_status(f"Next points are {label} (T toggles).")

    # -- model --------------------------------------------------------------------------------
    def ensure_model(self, then=None, force: bool = False) -> None:
        """Load the model chosen in the model bar unless one is loaded, then call ``then()``."""
        self.model_bar.load(then, force)

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
        self.model_bar.set_enabled(desc is None)
        if desc is not None:
            return
        if self._live_pending:
            self._live_pending = False
            self._live_timer.start()

    def set_status(self, text: str) -> None:
        """Show ``text`` under the controls."""
        self.view.task_panel.set_status(text)

    def show_error(self, exc) -> None:
        """One plain sentence in the status line and a napari notification (details kept)."""
        self.view.task_panel.show_error(exc)


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
