"""Precompute the embeddings of an N-D image's slices into an embedding cache.

An :class:`EmbedJob` run by :func:`~.runner.run_slices`: the runner embeds each
slice through the segmenter's cache (batched on GPUs, batch size from
:func:`~.encoder.auto_batch_size`), and the job only notes the slice as done. With
an on-disk cache (a signed zarr folder, :class:`~.cache.EmbeddingCache`) the
embeddings outlive the run: ``hqsam segment --cache``, ``hqsam auto --cache`` and
the widgets (``ViewerSession.use_embedding_folder``) reuse them, on this machine or
another, for the same model signature. An entry is keyed by the slice's uint8
model input, so the slice must be converted with the same contrast limits; the
default, the whole image's (:func:`~.image.default_contrast_limits`), is the one
those share.

Resume: slices whose entry is already in the folder are found by their key before
the run and are not read again (``result.reused``); a stopped run keeps every entry
it stored, so a rerun embeds only the rest. :func:`embed_stack_distributed` does
the same with one Dask task per slice, the workers writing into the shared folder
``spec.cache_dir``.

The :class:`~.runner.StackResult` of these runs has ``labels=None``: nothing is
segmented.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..errors import Cancelled, InputError
from .cache import EmbeddingCache, image_key
from .distributed import ModelSpec, run_slices_distributed
from .runner import Progress, ShouldStop, SlicePlan, StackResult, plan_slices, run_slices
from .segmenter import SliceSegmenter
from .tiled import WINDOWS_PER_CALL
from .tiles import DEFAULT_TILING, Tiling


@dataclass(frozen=True)
class EmbedJob:
    """Nothing beyond the embedding, which the runner computes through the cache.

    ``segment`` returns None (so a Dask worker sends nothing back) and ``record``
    notes the slice in ``result.slices``; ``result.labels`` is never touched. On a
    tiled slice (``tiling`` applies) the job embeds every tile of the grid, a few at
    a time, so that later prompted runs and the widget find each tile they route to.
    """

    tiling: Tiling | None = None
    steps: int = 1

    def segment(self, segmenter, index, image, embedding, step, should_stop) -> None:
        if embedding is None:  # a tiled slice: ``image`` reads windows
            windows = self.tiling.grid(image.shape)
            for start in range(0, len(windows), WINDOWS_PER_CALL):
                if should_stop is not None and should_stop():
                    raise Cancelled
                segmenter.embeddings([image.read(w)
                                      for w in windows[start:start + WINDOWS_PER_CALL]])
        return None

    def record(self, result: StackResult, index, output) -> None:
        result.slices.append(index)


def embed_stack(image, model=None, *, segmenter: SliceSegmenter | None = None,
                cache: EmbeddingCache | None = None, batch_size: int | None = None,
                slices: Sequence[tuple[int, ...]] | None = None,
                contrast_limits: tuple[float, float] | None = None,
                tiling: Tiling | None = DEFAULT_TILING,
                progress: Progress | None = None, should_stop: ShouldStop | None = None,
                **layout_kwargs) -> StackResult:
    """Embed every (or some) 2D slice of an image into ``cache``.

    Parameters
    ----------
    image : array-like
        N-D image (numpy, dask or zarr): leading axes, then Y, X, optionally RGB or a
        channel axis (``rgb``, ``channel_axis``, ``channel``, ``axes`` or ``layout``
        in ``layout_kwargs``, see :func:`~.runner.plan_slices`).
    model : HQSam, optional
        Needed unless ``segmenter`` is given.
    segmenter : SliceSegmenter, optional
        Embed through this one's cache (e.g. a widget session's); else one is built
        from ``model`` and ``cache`` (``cache`` is then ignored).
    cache : EmbeddingCache, optional
        Where the embeddings go; give one with a ``directory`` to keep them on disk
        (a memory-only cache keeps its last ``max_items``).
    batch_size : int, optional
        Slices encoded at once; default from free GPU memory, 1 on CPUs
        (:func:`~.encoder.auto_batch_size`).
    slices : sequence of tuple of int, optional
        Leading indices to embed, e.g. ``[(3,), (4,)]``; default every slice.
    contrast_limits : (lo, hi), optional
        Default: the whole image's (uint8: 0, 255), as the CLI and a napari layer's
        default use, so their slices find these entries.
    tiling : Tiling or None
        Slices longer than a tile on a side are embedded tile by tile, every tile of
        the grid (:mod:`.tiles`); runs with the same tiling find them. None embeds
        every slice whole, resized to the model input.
    progress, should_stop : callable, optional
        ``progress(done, total)`` in slices (stored slices count as done when found);
        ``should_stop()`` before each slice ends the run, keeping what was stored
        (see :mod:`.runner`).

    Returns
    -------
    StackResult
        ``labels`` None; ``slices`` the slices embedded or found, in that order;
        ``computed``/``reused`` embeddings; ``cancelled``; ``seconds``.
    """
    start = time.perf_counter()
    plan = plan_slices(image, contrast_limits=contrast_limits, slices=slices, **layout_kwargs)
    if segmenter is None:
        if model is None:
            raise InputError("embed_stack needs a model or a segmenter.")
        segmenter = SliceSegmenter(model, cache=cache)
    result = StackResult(None)
    total = len(plan.indices)
    job = EmbedJob(tiling)
    try:  # tiled slices find their stored tiles as they go (cache hits count as reused)
        todo = (list(plan.indices) if plan.tiled(job) else
                _skip_stored(image, plan, segmenter.cache, result, progress, should_stop))
    except Cancelled:
        result.cancelled = True
        todo = []
    found = len(result.slices)
    run_slices(job, image, replace(plan, indices=todo), segmenter, result,
               batch_size=batch_size,
               progress=None if progress is None else
               (lambda done, _total: progress(found + done, total)),
               should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result


def _skip_stored(image, plan: SlicePlan, cache, result: StackResult,
                 progress: Progress | None, should_stop: ShouldStop | None
                 ) -> list[tuple[int, ...]]:
    """Note the slices whose entry is on disk as done; return the others, in plan order.

    Only the keys are compared (an entry is about 12 MB; reading it back would
    cost more than converting the slice once more to find its key).
    """
    stored = set(cache.stored_keys())
    if not stored:
        return list(plan.indices)
    todo = []
    for index in plan.indices:
        if should_stop is not None and should_stop():
            raise Cancelled
        if image_key(plan.model_image(image, index)) in stored:
            result.slices.append(index)
            result.reused += 1
            if progress is not None:
                progress(len(result.slices), len(plan.indices))
        else:
            todo.append(index)
    return todo


def embed_stack_distributed(image, spec: ModelSpec, *, client=None,
                            scheduler: str | None = None, n_workers: int | None = None,
                            processes: bool = True,
                            slices: Sequence[tuple[int, ...]] | None = None,
                            contrast_limits: tuple[float, float] | None = None,
                            tiling: Tiling | None = DEFAULT_TILING,
                            progress: Progress | None = None,
                            should_stop: ShouldStop | None = None,
                            **layout_kwargs) -> StackResult:
    """:func:`embed_stack` with one Dask task per slice, into ``spec.cache_dir``.

    Parameters
    ----------
    image, slices, contrast_limits, tiling, layout_kwargs
        As in :func:`embed_stack`.
    spec : ModelSpec
        How each worker loads the model; ``cache_dir`` is the folder the workers
        share (required: the embeddings are kept nowhere else).
    client, scheduler, n_workers, processes, progress, should_stop
        As in :func:`~.distributed.run_slices_distributed`.

    Returns
    -------
    StackResult
        As :func:`embed_stack`; slices already stored are read by the workers and
        counted in ``reused``.
    """
    if spec.cache_dir is None:
        raise InputError("embedding on Dask workers needs a cache folder shared by the "
                         "workers (ModelSpec.cache_dir): their embeddings are kept nowhere "
                         "else.")
    start = time.perf_counter()
    plan = plan_slices(image, contrast_limits=contrast_limits, slices=slices, **layout_kwargs)
    result = run_slices_distributed(EmbedJob(tiling), image, plan, spec, StackResult(None),
                                    client=client, scheduler=scheduler, n_workers=n_workers,
                                    processes=processes, progress=progress,
                                    should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result
