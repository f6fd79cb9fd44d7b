"""'Refine all objects': every object of a labels layer refined by HQ-SAM, ids kept, one undo.

The engine (:func:`~napari_hq_sam.engine.refine.refine_labels`) works on a copy of the
layer's data in a worker thread, on the displayed slice or on every slice; back in the
GUI thread the slices it finished are copied into the layer as one undoable write. A
cancelled run keeps the slices it finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.labels import LabelChange
from ._slice_actions import UndoRecord, check_view
from ._tasks import segmenter_of
from ._text import count, on_slice
from ._view import ALL_SLICES

LISTED = 3  # kept objects named in the status line; more are counted


@dataclass(frozen=True, eq=False)
class RefineRequest:
    """A refinement read from napari in the GUI thread.

    Attributes
    ----------
    data, layout, contrast_limits
        The image, its layout and contrast limits.
    labels : np.ndarray
        A copy of the layer's labels (the source; never written).
    slices : list of tuple or None
        The slices to refine; None for all.
    score_threshold, iou_threshold : float
        See :func:`~napari_hq_sam.engine.refine.refine_labels`.
    """

    data: object
    layout: object
    contrast_limits: tuple
    labels: np.ndarray
    slices: list | None
    score_threshold: float = 0.5
    iou_threshold: float = 0.5


def refine_all_task(session, request: RefineRequest):
    """Return a task running :func:`~napari_hq_sam.engine.refine.refine_labels` (no Qt)."""

    def task(progress, should_stop):
        from ..engine.refine import refine_labels

        with segmenter_of(session) as segmenter:
            # the model bar's HQ mode and the session's tiling, as for the dock's other actions
            return refine_labels(
                request.data, request.labels, segmenter=segmenter,
                hq_token_only=segmenter.hq_token_only, tiling=session.tiling,
                layout=request.layout,
                contrast_limits=request.contrast_limits, slices=request.slices,
                score_threshold=request.score_threshold,
                iou_threshold=request.iou_threshold, progress=progress,
                should_stop=should_stop)

    return task


class RefineAll:
    """The 'Refine all objects' button; the controller provides layers, runner and model."""

    def __init__(self, controller):
        self.c = controller
        controller.view.refine_all_button.clicked.connect(self.run)

    def run(self) -> None:
        """Refine every object of the chosen labels layer (this slice or all slices)."""
        c = self.c
        try:
            ctx = c.context()
            check_view(c.viewer, ctx)
            labels = c.labels_layer(ctx, create=False)
            if labels is None:
                raise ValueError("Choose the labels layer whose objects to refine.")
            every = c.view.refine_scope_combo.currentText() == ALL_SLICES
            index = c.index(ctx)
            source = np.array(labels.data)
            where = source if every else source[index]
            if not where.any():
                raise ValueError(f"'{labels.name}' holds no objects"
                                 f"{'' if every else on_slice(index)} to refine.")
        except ValueError as exc:
            c.show_error(exc)
            return
        slices = None if every or not index else [index]
        request = RefineRequest(ctx.data, ctx.layout, ctx.contrast_limits, source, slices,
                                float(c.view.threshold_spin.value()),
                                float(c.view.refine_iou_spin.value()))
        scope = " on every slice" if every and index else on_slice(index)
        desc = f"Refining all objects{scope}"
        one_slice = not (every and index)

        def finish(result):
            self._write(result, labels, scope)

        def start():
            c.runner.start(refine_all_task(c.session, request), desc=desc, on_done=finish,
                           on_cancelled=finish, unit="decoder batches" if one_slice else "slices")

        c.ensure_model(start)

    def _write(self, result, labels, scope: str) -> None:
        """Copy the finished slices into the layer as one undo step; say what was kept."""
        c = self.c
        changes = []
        for index in result.slices:
            before = np.array(labels.data[index])
            after = np.asarray(result.labels[index])
            if np.array_equal(before, after):
                continue
            region = (slice(0, after.shape[0]), slice(0, after.shape[1]))
            changes.append(LabelChange(tuple(index), region, before, after.copy()))
            labels.data[tuple(index)] = after
        labels.refresh()
        if changes:
            c.push_undo(UndoRecord(labels, changes, None,
                                   f"the refinement of all objects{scope}"))
        state = (f"Cancelled with {count(len(result.slices), 'slice')} finished:"
                 if result.cancelled else "Done:")
        kept = result.kept
        text = (f"{state} refined {result.refined} of {count(result.objects, 'object')} in "
                f"'{labels.name}'{scope}, kept {len(kept)}")
        if kept:
            reasons = ", ".join(f"{n} {r}" for r, n in result.kept_reasons().items())
            named = "; ".join(k.describe() for k in kept[:LISTED])
            more = f"; {len(kept) - LISTED} more" if len(kept) > LISTED else ""
            text += f" ({reasons}: {named}{more})"
        c.set_status(f"{text} ({result.seconds:.1f} s).")
