"""Stack-level actions: all prompted slices in one run, and z-propagation of an object.

The engine paints into a copy of the target labels in the worker thread; back in
the GUI thread the slices it reached are copied into the layer as one undoable
write. A cancelled run keeps the slices it finished.
"""

from __future__ import annotations

import numpy as np

from ..engine.labels import LabelChange, next_label_id
from ..engine.prompts import with_ids
from . import _layers, _tasks
from ._slice_actions import UndoRecord, check_view
from ._text import count, on_slice


class StackActions:
    """What the stack buttons do; the controller provides layers, runner and model."""

    def __init__(self, controller):
        from ._refine_all import RefineAll

        self.c = controller
        self.refine_all = RefineAll(controller)  # wires its own button

    def _request(self, prompts, ctx, labels, propagate: bool) -> _tasks.StackRequest:
        v = self.c.view
        return _tasks.StackRequest(
            ctx.data, ctx.layout, ctx.contrast_limits, prompts, np.array(labels.data),
            overwrite=v.overwrite_check.isChecked(), propagate=propagate,
            score_threshold=float(v.threshold_spin.value()), tiling=self.c.session.tiling)

    def segment_stack(self) -> None:
        """Segment every slice that has prompts, in a worker with progress and cancel."""
        c = self.c
        try:
            ctx = c.context()
            prompts = c.prompts()
            if not prompts:
                raise ValueError("No prompts on any slice: add points or boxes first.")
            labels = c.labels_layer(ctx)
        except ValueError as exc:
            c.show_error(exc)
            return
        prompts = with_ids(prompts, next_label_id(labels.data))
        request = self._request(prompts, ctx, labels, propagate=False)
        n = len({p.slice_index for p in prompts})
        self._start(_tasks.stack_task, request, labels, f"Segmenting {count(n, 'prompted slice')}",
                    consume=None)

    def propagate(self) -> None:
        """Propagate objects from the displayed slice up and down the last slice axis.

        With prompts on the slice, their objects are segmented there and propagated;
        without, the chosen object id (or the labels layer's selected label) is.
        """
        c = self.c
        try:
            ctx = c.context()
            if not ctx.layout.leading_shape:
                raise ValueError("Propagation needs a stack (ZYX or TZYX): this image is 2D.")
            check_view(c.viewer, ctx)
            index = c.index(ctx)
            prompts = c.prompts(index)
            labels = c.labels_layer(ctx, create=bool(prompts))
            if labels is None:
                raise ValueError("No prompts on this slice and no labels layer chosen: prompt "
                                 "the object or choose the labels layer holding it.")
        except ValueError as exc:
            c.show_error(exc)
            return
        if prompts:
            prompts = with_ids(prompts, next_label_id(labels.data))
            request = self._request(prompts, ctx, labels, propagate=True)
            self._start(_tasks.stack_task, request, labels,
                        f"Propagating {count(len(prompts), 'object')}{on_slice(index, 'from')}",
                        consume=index)
            return
        object_id = c.view.refine_spin.value() or int(labels.selected_label)
        if not (np.asarray(labels.data[index]) == object_id).any():
            c.show_error(ValueError(f"Object {object_id} is not in '{labels.name}'"
                                    f"{on_slice(index)}: prompt it or choose a present id."))
            return
        request = self._request([], ctx, labels, propagate=True)
        self._start(lambda s, r: _tasks.propagate_existing_task(s, r, index, object_id),
                    request, labels, f"Propagating object {object_id}{on_slice(index, 'from')}",
                    consume=None)

    def _start(self, make_task, request, labels, desc: str, consume) -> None:
        c = self.c

        def finish(result):
            self._write(result, labels, desc, consume)

        def start():
            c.runner.start(make_task(c.session, request), desc=desc, on_done=finish,
                           on_cancelled=finish, unit="slices")

        c.ensure_model(start)

    def _write(self, result, labels, desc: str, consume) -> None:
        """Copy the reached slices of ``result.labels`` into the layer as one undo step."""
        c = self.c
        changes = []
        for index in dict.fromkeys(result.slices):
            change = _slice_change(tuple(index), labels.data[index], result.labels[index])
            if change is None:
                continue
            changes.append(change)
            labels.data[change.key] = change.after
        labels.refresh()
        snapshot = None
        if consume is not None and changes:
            snapshot = _layers.remove_prompts_on(*c.prompt_layers(), consume)
            _layers.clear_preview(c.viewer)
        if changes:
            c.push_undo(UndoRecord(labels, changes, snapshot, desc.lower()))
        state = "Cancelled, kept" if result.cancelled else "Done:"
        c.set_status(f"{state} {count(len(changes), 'slice')} written to '{labels.name}' "
                     f"({count(result.computed, 'new embedding')}, {result.reused} cached, "
                     f"{result.seconds:.1f} s).")


def _slice_change(index: tuple, before, after) -> LabelChange | None:
    """The change from ``before`` to ``after`` (one slice), cut to the rectangle that differs.

    Undo records then hold what a run changed, not whole slices of a large image.
    """
    before, after = np.asarray(before), np.asarray(after)
    rows, cols = np.nonzero(before != after)
    if not len(rows):
        return None
    region = (slice(int(rows.min()), int(rows.max()) + 1),
              slice(int(cols.min()), int(cols.max()) + 1))
    return LabelChange(index, region, before[region].copy(), after[region].copy())
