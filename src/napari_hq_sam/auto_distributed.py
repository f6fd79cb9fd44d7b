"""Segment everything on a Dask cluster: one task per slice.

Built on the engine's Dask path (:mod:`napari_hq_sam.engine.distributed`): workers
get a :class:`~napari_hq_sam.engine.distributed.ModelSpec` and load the model
(and the on-disk embedding cache) once per process. The main process converts
the slices, and writes the returned labels in slice order with the same id
offsets as :func:`~napari_hq_sam.auto_stack.segment_everything`, so the result
is identical to a single-process run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .auto_stack import AutoRun, ProgressFn, StopFn, add_slice, finish_run, plan_run
from .automatic import AutoMaskConfig, AutomaticMaskGenerator
from .engine.distributed import ModelSpec, dask_client, worker_segmenter
from .engine.image import ImageLayout
from .engine.stack import model_slice
from .label_ops import LABELS_DTYPE


def auto_slice_task(spec: ModelSpec, rgb: np.ndarray, config: AutoMaskConfig) -> np.ndarray:
    """Dask task: (H, W) ``uint32`` labels (ids 1..n) of one uint8 (H, W, 3) slice."""
    segmenter = worker_segmenter(spec)
    embedding = segmenter.embeddings([rgb])[0]
    generator = AutomaticMaskGenerator(segmenter.predictor, config)
    return generator.generate(rgb, embedding).to_labels()


def segment_everything_distributed(
        image, spec: ModelSpec, config: AutoMaskConfig | None = None, *, client=None,
        scheduler: str | None = None, n_workers: int | None = None, processes: bool = True,
        layout: ImageLayout | None = None, contrast_limits: tuple[float, float] | None = None,
        slices: Sequence[tuple[int, ...]] | None = None, stitch: bool = False,
        stitch_iou: float = 0.5, progress: ProgressFn | None = None,
        should_stop: StopFn | None = None, **layout_kwargs) -> AutoRun:
    """:func:`~napari_hq_sam.auto_stack.segment_everything` with one Dask task per slice.

    Parameters
    ----------
    image, config, layout, contrast_limits, slices, stitch, stitch_iou
        As in :func:`~napari_hq_sam.auto_stack.segment_everything`.
    spec : ModelSpec
        How each worker loads the model (``spec.cache_dir``: shared disk cache).
    client : distributed.Client, optional
        Use this client; else one joined to ``scheduler`` or a new LocalCluster of
        ``n_workers`` (closed at the end).
    progress : callable, optional
        ``progress(done, total)`` in slices, as slices finish.
    should_stop : callable, optional
        Checked as slices finish; True cancels the rest, finished slices are kept.

    Returns
    -------
    AutoRun
        Identical labels to a single-process run.
    """
    from distributed import as_completed

    config = config or AutoMaskConfig()
    layout, limits, indices = plan_run(image, layout, contrast_limits, slices, **layout_kwargs)
    run = AutoRun(np.zeros(layout.labels_shape, dtype=LABELS_DTYPE), config=config)
    finished: dict[tuple[int, ...], np.ndarray] = {}
    with dask_client(client, scheduler, n_workers, processes) as client:
        futures = {client.submit(auto_slice_task, spec, model_slice(image, layout, i, limits),
                                 config, pure=False): i for i in indices}
        for future in as_completed(list(futures)):
            finished[futures[future]] = future.result()
            if progress is not None:
                progress(len(finished), len(indices))
            if should_stop is not None and should_stop() and len(finished) < len(indices):
                run.cancelled = True
                client.cancel([f for f in futures if not f.done()])
                break
    for index in indices:              # slice order: the same ids as one process
        if index in finished:
            add_slice(run, index, finished[index])
    return finish_run(run, stitch, stitch_iou)
