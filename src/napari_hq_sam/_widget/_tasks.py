"""Work the widget runs in worker threads: plain functions over the engine, no Qt.

Each task takes the engine's two callables, ``progress(done, total)`` and
``should_stop()``, so that :class:`~._runner.TaskRunner` can run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ModelChoice:
    """What the user chose in the model box.

    Attributes
    ----------
    model_type : str or None
        ``vit_tiny`` … ``vit_h``; None for a local file whose backbone is read from it.
    checkpoint : str or None
        Local checkpoint path; None downloads the official file (cached).
    device : str
        ``auto``, ``cpu``, ``cuda:0``, ``mps``.
    precision : str
        ``fp32``, ``bf16`` or ``fp16``.
    """

    model_type: str | None
    checkpoint: str | None
    device: str = "auto"
    precision: str = "fp32"

    def describe(self) -> str:
        """Short text for the status line."""
        source = Path(self.checkpoint).name if self.checkpoint else "official weights"
        return f"{self.model_type or 'local file'} ({source}, {self.device}, {self.precision})"


def load_model_task(choice: ModelChoice):
    """Return a task that loads the chosen model (downloading official weights once).

    The task returns a :class:`Session` around the model.
    """

    def task(progress, should_stop):
        from ..loading import load_model
        from ..weights import cached_checkpoint, checkpoint_model_type

        progress(0, 1)
        if choice.checkpoint is not None:
            if not Path(choice.checkpoint).is_file():
                raise FileNotFoundError(f"Checkpoint file not found: {choice.checkpoint}")
            model_type = choice.model_type or checkpoint_model_type(choice.checkpoint)
        else:
            model_type = choice.model_type
        model = load_model(model_type, choice.checkpoint, device=choice.device,
                           progress=False, precision=choice.precision)
        path = choice.checkpoint or cached_checkpoint(model_type)
        session = Session(model, path)
        progress(1, 1)
        return session

    return task


class Session:
    """The loaded model with its slice segmenter and per-slice embedding cache.

    Only worker threads use it, one task at a time (the runner serialises tasks).

    Parameters
    ----------
    model : HQSam
    checkpoint : str or Path, optional
        File the weights came from (for the cache signature).
    max_items : int
        Embeddings kept in memory (about 12 MB each).
    """

    def __init__(self, model, checkpoint=None, max_items: int = 32):
        from ..engine.segmenter import SliceSegmenter

        self.model = model
        self.cache = shared_cache(model, checkpoint, max_items)
        self.segmenter = SliceSegmenter(model, cache=self.cache)

    def slice_image(self, request) -> np.ndarray:
        """uint8 ``(H, W, 3)`` model input of ``request``'s slice, through its contrast limits."""
        from ..engine.image import to_model_image

        layout = request.layout
        return to_model_image(layout.take(request.data, request.index),
                              request.contrast_limits, rgb=layout.rgb)


_CACHES: dict[str, object] = {}


def shared_cache(model, checkpoint=None, max_items: int = 32):
    """The in-memory embedding cache of this model's weights, shared by widgets.

    Reloading the same weights (or opening a second widget) keeps the slices
    already embedded; the engine's signature (model type, weights hash,
    precision, version) tells models apart.
    """
    import json

    from ..engine.cache import EmbeddingCache, model_signature

    signature = model_signature(model, checkpoint)
    key = json.dumps(signature, sort_keys=True)
    if key not in _CACHES:
        _CACHES[key] = EmbeddingCache(signature, max_items=max_items)
    return _CACHES[key]


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
    hq_token_only : bool
    """

    data: object
    layout: object
    contrast_limits: tuple
    index: tuple
    prompts: list
    hq_token_only: bool = False


def segment_slice_task(session: Session, request: SliceRequest):
    """Return a task that segments one slice's objects (encoder only on a cache miss).

    The task returns ``(SliceResult, cached)`` where ``cached`` says whether the
    embedding came from the cache.
    """

    def task(progress, should_stop):
        progress(0, 1)
        image = session.slice_image(request)
        before = session.segmenter.computed
        session.segmenter.hq_token_only = request.hq_token_only
        result = session.segmenter.segment(image, request.prompts)
        progress(1, 1)
        return result, session.segmenter.computed == before

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
    hq_token_only : bool
    """

    data: object
    layout: object
    contrast_limits: tuple
    prompts: list
    labels: np.ndarray
    overwrite: bool = False
    propagate: bool = False
    score_threshold: float = 0.5
    hq_token_only: bool = False


def stack_task(session: Session, request: StackRequest):
    """Return a task running :func:`~napari_hq_sam.engine.stack.segment_stack`.

    The task returns the engine's ``StackResult`` (``cancelled`` set when stopped;
    the finished slices are in ``result.labels``).
    """

    def task(progress, should_stop):
        from ..engine.stack import segment_stack

        session.segmenter.hq_token_only = request.hq_token_only
        return segment_stack(
            request.data, request.prompts, segmenter=session.segmenter,
            layout=request.layout, contrast_limits=request.contrast_limits,
            labels=request.labels, overwrite=request.overwrite, propagate=request.propagate,
            score_threshold=request.score_threshold, progress=progress,
            should_stop=should_stop)

    return task


def propagate_existing_task(session: Session, request: StackRequest, index: tuple,
                            object_id: int):
    """Return a task propagating an object already in ``request.labels`` from slice ``index``.

    The object's pixels on ``index`` seed the engine's propagation both ways.
    """

    def task(progress, should_stop):
        from ..engine.prompts import mask_prompt
        from ..engine.propagate import propagate_objects
        from ..engine.runner import SlicePlan, StackResult

        session.segmenter.hq_token_only = request.hq_token_only
        seed = mask_prompt(np.asarray(request.labels[index]) == object_id, index, object_id)
        result = StackResult(request.labels, objects=1)
        plan = SlicePlan(request.layout, tuple(request.contrast_limits), [index])
        propagate_objects(session.segmenter, request.data, plan, {index: [seed]}, result,
                          score_threshold=request.score_threshold,
                          overwrite=request.overwrite, progress=progress,
                          should_stop=should_stop)
        return result

    return task
