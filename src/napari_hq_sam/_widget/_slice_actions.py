"""Slice-level actions: live preview, segment-and-commit, refine an object, undo records."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..engine.labels import next_label_id, paste_mask, paste_masks, undo_changes
from ..engine.prompts import clipping_note, mask_prompt
from . import _layers, _tasks
from ._text import count, object_ids, on_slice, scores, slice_name


@dataclass(eq=False)
class UndoRecord:
    """One write into a labels layer, and the prompts it consumed.

    Attributes
    ----------
    layer : napari.layers.Labels
    changes : list of LabelChange
        From the engine's paste functions.
    prompts : dict or None
        Snapshot of the prompt layers before the write (restored on undo).
    description : str
        What was written, in words (``"objects 1–2 on slice 12"``): "Undid: …".
    """

    layer: object
    changes: list
    prompts: dict | None
    description: str

    def undo(self, controller) -> None:
        """Revert the labels and put the prompts back."""
        undo_changes(self.layer.data, self.changes)
        self.layer.refresh()
        if self.prompts is not None:
            _layers.restore_prompts(controller.viewer, self.prompts)


class SliceActions:
    """What the slice buttons do; the controller provides layers, runner and model."""

    def __init__(self, controller):
        self.c = controller
        self.clipped: str | None = None  # the last request's clipping_note

    # -- requests ---------------------------------------------------------------------------
    def request(self, need_prompts: bool = True):
        """``(ImageContext, SliceRequest)`` for the displayed slice and its prompts.

        Raises
        ------
        ValueError
            No image layer, no prompt layers/prompts (when ``need_prompts``), a
            point outside the image or a box wholly outside (a box partly outside is
            clipped to the image).
        """
        c = self.c
        ctx = c.context()
        check_view(c.viewer, ctx)
        index = c.index(ctx)
        prompts = c.prompts(index)
        if need_prompts and not prompts:
            where = on_slice(index)
            hint = ("click 'Add prompt layers', then " if c.prompt_layers() == (None, None)
                    else "")
            raise ValueError(f"No prompts{where}: {hint}click points in 'HQ-SAM points' or "
                             "draw a box in 'HQ-SAM boxes' first.")
        fitted = [p.clipped_to(*ctx.layout.spatial_shape) for p in prompts]
        self.clipped = clipping_note(prompts, fitted)  # boxes dragged past the image edge
        request = _tasks.SliceRequest(ctx.data, ctx.layout, ctx.contrast_limits, index,
                                      fitted, tiling=c.session.tiling)
        return ctx, request

    def _run(self, request, desc: str, on_done) -> None:
        c = self.c

        def start():
            c.runner.start(_tasks.segment_slice_task(c.session, request), desc=desc,
                           on_done=on_done)

        c.ensure_model(start)

    # -- live preview ----------------------------------------------------------------------
    def preview(self) -> None:
        """Segment the displayed slice into the preview layer (nothing is committed)."""
        c = self.c
        changed_at = c.prompts_changed_at
        try:
            ctx, request = self.request(need_prompts=False)
        except ValueError as exc:
            c.show_error(exc)
            return
        if not request.prompts:
            _layers.clear_preview(c.viewer)
            return
        clipped = self.clipped

        def done(out):
            result, cached = out
            preview = _layers.show_preview(c.viewer, list(result.masks), request.index,
                                           ctx.scale, ctx.translate, origins=result.origins)
            c.adopt(preview, toggle=True)
            if changed_at is not None and cached:
                c.last_click_to_mask = time.perf_counter() - changed_at
            head = f"Preview{on_slice(request.index, 'of')}: {count(len(result.masks), 'object')}"
            c.set_status(_summary(head, result, cached, c.runner.last_duration, clipped))

        self._run(request, _doing("Previewing", request.index), done)

    # -- commit ----------------------------------------------------------------------------
    def segment_and_commit(self) -> None:
        """Segment the displayed slice and add its objects to the labels layer (new ids)."""
        c = self.c
        try:
            ctx, request = self.request()
        except ValueError as exc:
            c.show_error(exc)
            return
        clipped = self.clipped
        self._run(request, _doing("Segmenting", request.index),
                  lambda out: self.commit(ctx, request, out[0], out[1], clipped))

    def commit(self, ctx, request, result, cached: bool = False,
               clipped: str | None = None) -> None:
        """Paste ``result`` into the labels with fresh ids, consume the slice's prompts.

        ``clipped``: the request's :func:`~..engine.prompts.clipping_note`, for the status.
        """
        c = self.c
        try:
            labels = c.labels_layer(ctx)
        except ValueError as exc:
            c.show_error(exc)
            return
        start = next_label_id(labels.data)
        ids = [start + k for k in range(len(result.masks))]
        changes = paste_masks(labels.data, request.index, list(result.masks), ids,
                              overwrite=c.view.overwrite_check.isChecked(),
                              origins=result.origins)
        labels.refresh()
        snapshot = _layers.remove_prompts_on(*c.prompt_layers(), request.index)
        _layers.clear_preview(c.viewer)
        written = sorted({int(v) for ch in changes for v in np.unique(ch.after) if v in ids})
        where = on_slice(request.index)
        c.push_undo(UndoRecord(labels, changes, snapshot, f"{object_ids(written)}{where}"))
        head = f"Added {object_ids(written)} to '{labels.name}'{where}"
        if not written:
            head += ": the masks lie on other objects"
        c.set_status(_summary(head, result, cached, c.runner.last_duration, clipped))

    # -- refine ----------------------------------------------------------------------------
    def refine(self) -> None:
        """Re-segment one labels object on the displayed slice from its mask (mask prompt)."""
        c = self.c
        try:
            ctx, request = self.request(need_prompts=False)
            labels = c.labels_layer(ctx, create=False)
            if labels is None:
                raise ValueError("Choose the labels layer that holds the object to refine.")
            object_id = c.view.refine_spin.value() or int(labels.selected_label)
            current = np.asarray(labels.data[request.index]) == object_id
            if not current.any():
                raise ValueError(f"Object {object_id} is not in '{labels.name}'"
                                 f"{on_slice(request.index)}: choose an id present there.")
            prompt = mask_prompt(current, request.index, object_id, request.prompts)
        except ValueError as exc:
            c.show_error(exc)
            return
        request = _tasks.SliceRequest(request.data, request.layout, request.contrast_limits,
                                      request.index, [prompt], tiling=request.tiling)

        def done(out):
            result, cached = out
            origin = None if result.origins is None else tuple(result.origins[0])
            change = paste_mask(labels.data, request.index, result.masks[0], object_id,
                                overwrite=c.view.overwrite_check.isChecked(), replace=True,
                                origin=origin)
            labels.refresh()
            what = f"object {object_id}{on_slice(request.index)}"
            c.push_undo(UndoRecord(labels, [] if change is None else [change], None,
                                   f"the refinement of {what}"))
            c.set_status(_summary(f"Refined {what}", result, cached, c.runner.last_duration))

        self._run(request, f"Refining object {object_id}", done)


def check_view(viewer, ctx) -> None:
    """Raise a ValueError unless napari shows YX planes of the image in 2D.

    Raises
    ------
    ValueError
        In 3D display, or when the axes were rolled or transposed so that the
        displayed plane is not the image's (Y, X).
    """
    if viewer.dims.ndisplay != 2:
        raise ValueError("HQ-SAM segments 2D slices: switch napari to 2D view (the square "
                         "button at the bottom left, or Ctrl+Y) first.")
    ndim = viewer.dims.ndim
    if tuple(viewer.dims.displayed) != (ndim - 2, ndim - 1):
        raise ValueError("The displayed plane is not the image's YX plane: reset the axis "
                         "order (right-click the roll-axes button) to segment slices.")


def _doing(verb: str, index: tuple[int, ...]) -> str:
    """``'Segmenting slice 12'``, or ``'Segmenting the image'`` for a 2D image."""
    return f"{verb} {slice_name(index) or 'the image'}"


def _summary(head: str, result, cached: bool, seconds: float | None,
             note: str | None = None) -> str:
    """``head`` and how it went: ``'<head> (scores 0.91, 0.85; cached embedding, 0.12 s).'``

    ``note`` (a sentence, e.g. that a box was clipped to the image) follows.
    """
    how = "cached embedding" if cached else "new embedding"
    if getattr(result, "origins", None) is not None:  # decoded in native-resolution tiles
        how = "tiles at native resolution, " + ("all cached" if cached else "new embeddings")
    took = f", {seconds:.2f} s" if seconds is not None else ""
    return f"{head} ({scores(result.scores)}; {how}{took})." + (f" {note}" if note else "")
