"""Work the widget runs in worker threads: plain functions over the engine, no Qt.

Each task takes the engine's two callables, ``progress(done, total)`` and
``should_stop()``, so that :class:`~._runner.TaskRunner` can run it, and works on the
viewer's :class:`~napari_hq_sam.session.ViewerSession` while holding its lock (the
widgets of a viewer share one model and take turns with it).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..session import ViewerSession


def slice_image(request):
    """The model input of ``request``'s slice, through its contrast limits.

    A slice the request's tiling applies to is returned as a
    :class:`~napari_hq_sam.engine.tiled.SliceSource` (windows read when a prompt needs
    them: a huge, lazy or multiscale image is never converted whole); any other as
    uint8 ``(H, W, 3)``.
    """
    tiling = getattr(request, "tiling", None)
    if tiling is not None and tiling.applies(request.layout.spatial_shape):
        from ..engine.tiled import SliceSource

        return SliceSource(request.data, request.layout, request.index,
                           request.contrast_limits)
    from ..engine.image import model_slice

    return model_slice(request.data, request.layout, request.index, request.contrast_limits)


@dataclass(frozen=True, eq=False)
class SliceRequest:
    """Everything a slice task needs, read from napari in the GUI thread.

    Attributes
    ----------
    data : array-like
        The image array.
    layout : ImageLayout
    contrast_limits : (float, float)
    index : tuple of int
        The slice.
    prompts : list of ObjectPrompt
        The slice's objects.
    tiling : Tiling or None
        Tiles for a slice longer than a tile (masks then come back as crops with
        origins); None resizes the slice to the model input.
    """

    data: object
    layout: object
    contrast_limits: tuple
    index: tuple
    prompts: list
    tiling: object = None


@contextmanager
def segmenter_of(session: ViewerSession):
    """The session's segmenter, held for this task (the lock is the viewer's)."""
    with session.lock:
        session.require_model()
        yield session.segmenter


def segment_slice_task(session: ViewerSession, request: SliceRequest):
    """Return a task that segments one slice's objects (encoder only on a cache miss).

    The task returns ``(SliceResult, cached)`` where ``cached`` says whether the
    embedding came from the cache.
    """

    def task(progress, should_stop):
        progress(0, 1)
        image = slice_image(request)
        with segmenter_of(session) as segmenter:
            before = segmenter.computed
            result = segmenter.segment(image, request.prompts, tiling=request.tiling)
            cached = segmenter.computed == before
        progress(1, 1)
        return result, cached

    return task


def preload() -> None:
    """Import torch, torchvision and the model code in the calling (GUI) thread.

    Two crashes are avoided here. Importing torchvision for the first time in a
    worker thread can crash the interpreter, so the widget package calls this when
    napari imports it, before any task runs. And torchvision imports triton, whose
    bundled LLVM clashes with the one Mesa's OpenGL driver (llvmpipe, radeonsi) has
    already loaded into napari's process: a segmentation fault. Triton only compiles
    GPU kernels, so on a machine without CUDA it is marked as absent before
    torchvision looks for it.
    """
    import sys

    import torch

    if "triton" not in sys.modules and not torch.cuda.is_available():
        sys.modules["triton"] = None  # import triton -> ImportError: "not installed"
    from .. import loading  # noqa: F401  (torchvision, segment_anything)
    from ..engine import cache, segmenter  # noqa: F401


@dataclass(frozen=True, eq=False)
class StackRequest:
    """A stack run (optionally with propagation) read from napari in the GUI thread.

    Attributes
    ----------
    data, layout, contrast_limits
        As in :class:`SliceRequest`.
    prompts : list of ObjectPrompt
        With the label ids they will be written as.
    labels : np.ndarray
        A copy of the target labels; the task paints into it.
    overwrite : bool
    propagate : bool
    score_threshold : float
    tiling : Tiling or None
        As in :class:`SliceRequest`.
    """

    data: object
    layout: object
    contrast_limits: tuple
    prompts: list
    labels: np.ndarray
    overwrite: bool = False
    propagate: bool = False
    score_threshold: float = 0.5
    tiling: object = None


def stack_task(session: ViewerSession, request: StackRequest):
    """Return a task running :func:`~napari_hq_sam.engine.stack.segment_stack`.

    The task returns the engine's ``StackResult`` (``cancelled`` set when stopped;
    the finished slices are in ``result.labels``).
    """

    def task(progress, should_stop):
        from ..engine.stack import segment_stack

        with segmenter_of(session) as segmenter:
            return segment_stack(
                request.data, request.prompts, segmenter=segmenter,
                layout=request.layout, contrast_limits=request.contrast_limits,
                labels=request.labels, overwrite=request.overwrite,
                propagate=request.propagate, score_threshold=request.score_threshold,
                tiling=request.tiling, progress=progress, should_stop=should_stop)

    return task


def propagate_existing_task(session: ViewerSession, request: StackRequest, index: tuple,
                            object_id: int):
    """Return a task propagating an object already in ``request.labels`` from slice ``index``.

    The object's pixels on ``index`` seed the engine's propagation both ways.
    """

    def task(progress, should_stop):
        from ..engine.prompts import mask_prompt
        from ..engine.propagate import propagate_objects
        from ..engine.runner import SlicePlan, StackResult

        seed = mask_prompt(np.asarray(request.labels[index]) == object_id, index, object_id)
        result = StackResult(request.labels, objects=1)
        plan = SlicePlan(request.layout, tuple(request.contrast_limits), [index])
        with segmenter_of(session) as segmenter:
            propagate_objects(segmenter, request.data, plan, {index: [seed]}, result,
                              score_threshold=request.score_threshold,
                              overwrite=request.overwrite, tiling=request.tiling,
                              progress=progress,
                              should_stop=should_stop)
        return result

    return task
