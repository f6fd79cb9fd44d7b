"""The stack run of :mod:`.stack` on a Dask cluster, one task per prompted slice.

Workers receive a :class:`ModelSpec` (how to load the model, not the model) and
load it once per process, in :func:`worker_segmenter`; threads of a worker share
that model and its embedding cache, each with its own predictor. The main
process reads and converts the slices, and pastes the returned masks in slice
order, so the labels are identical to a single-process run.

``n_workers`` starts a ``LocalCluster``; ``scheduler`` joins any running
``dask.distributed`` scheduler (e.g. one started by dask-jobqueue on an HPC
cluster; the workers then need this package and the checkpoint path).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .cache import EmbeddingCache, model_signature
from .prompts import ObjectPrompt
from .segmenter import SliceResult, SliceSegmenter
from .stack import StackResult, group_by_slice, model_slice, paste_result, prepare_run

_MODELS: dict = {}
_SEGMENTERS: dict = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """Everything a worker needs to build the same segmenter as the main process.

    Attributes
    ----------
    model_type : str
    checkpoint : str or None
        Checkpoint path as seen by the workers (None: the official file, downloaded).
    device : str or None
        None picks CUDA, then MPS, then CPU on each worker.
    precision : str
        ``fp32``, ``bf16`` or ``fp16``.
    adapter : str or None
        Adapter file loaded with ``napari_hq_sam.adapters.load_adapter``.
    cache_dir : str or None
        On-disk embedding cache shared by the workers.
    hq_token_only : bool
    """

    model_type: str
    checkpoint: str | None = None
    device: str | None = None
    precision: str = "fp32"
    adapter: str | None = None
    cache_dir: str | None = None
    hq_token_only: bool = False


def load_spec_model(spec: ModelSpec):
    """The model of ``spec``, loaded once per process."""
    with _LOCK:
        if spec not in _MODELS:
            from ..loading import load_model

            model = load_model(spec.model_type, spec.checkpoint, spec.device, progress=False,
                               precision=spec.precision)
            if spec.adapter is not None:
                from ..adapters import load_adapter

                load_adapter(model, spec.adapter, base_checkpoint=spec.checkpoint)
            cache = None
            if spec.cache_dir is not None:
                signature = model_signature(model, spec.checkpoint, spec.adapter)
                cache = EmbeddingCache(signature, directory=spec.cache_dir)
            _MODELS[spec] = (model, cache)
        return _MODELS[spec]


def worker_segmenter(spec: ModelSpec) -> SliceSegmenter:
    """This thread's segmenter for ``spec`` (model and cache shared within the process)."""
    key = (spec, threading.get_ident())
    if key not in _SEGMENTERS:
        model, cache = load_spec_model(spec)
        _SEGMENTERS[key] = SliceSegmenter(model, cache=cache, hq_token_only=spec.hq_token_only)
    return _SEGMENTERS[key]


def segment_slice_task(spec: ModelSpec, image, prompts: Sequence[ObjectPrompt]
                       ) -> tuple[SliceResult, int, int]:
    """Dask task: segment one slice; returns ``(result, computed, reused)`` embeddings."""
    segmenter = worker_segmenter(spec)
    computed, reused = segmenter.computed, segmenter.reused
    result = segmenter.segment(image, list(prompts))
    return result, segmenter.computed - computed, segmenter.reused - reused


def open_client(client=None, scheduler: str | None = None, n_workers: int | None = None,
                processes: bool = True, threads_per_worker: int = 1):
    """``(client, owned)``: the given client, one joined to ``scheduler``, or a new LocalCluster.

    ``owned`` is True when the caller should close the client (and its cluster).
    """
    from distributed import Client, LocalCluster

    if client is not None:
        return client, False
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s"), True
        except OSError as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler}: {exc}. "
                               "Check the address and that the scheduler runs.") from None
    if not n_workers or n_workers < 1:
        raise ValueError("give a Dask client, a scheduler address or a number of workers >= 1.")
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                           processes=processes, dashboard_address=None)
    return Client(cluster), True


@contextlib.contextmanager
def dask_client(client=None, scheduler: str | None = None, n_workers: int | None = None,
                processes: bool = True):
    """Context manager around :func:`open_client` that closes what it opened."""
    client, owned = open_client(client, scheduler, n_workers, processes)
    try:
        yield client
    finally:
        if owned:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()


def segment_stack_distributed(image, prompts: Sequence[ObjectPrompt], spec: ModelSpec, *,
                              client=None, scheduler: str | None = None,
                              n_workers: int | None = None, processes: bool = True,
                              contrast_limits=None, labels=None, overwrite: bool = False,
                              propagate: bool = False, score_threshold: float = 0.5,
                              progress=None, should_stop=None, **layout_kwargs) -> StackResult:
    """:func:`~.stack.segment_stack` with one Dask task per prompted slice.

    Parameters
    ----------
    image, prompts, contrast_limits, labels, overwrite, progress, should_stop
        As in :func:`~.stack.segment_stack`; ``should_stop`` cancels the slices not
        yet finished; finished ones are kept.
    spec : ModelSpec
        How each worker loads the model.
    client : distributed.Client, optional
        Use this client; else ``scheduler`` or ``n_workers`` (a LocalCluster with
        ``processes`` and one thread per worker) is used and closed at the end.
    propagate : bool
        After the cluster run, propagate in this process (loading the model here).

    Returns
    -------
    StackResult
        Identical labels to a single-process run.
    """
    start = time.perf_counter()
    layout, limits, labels = prepare_run(image, prompts, contrast_limits=contrast_limits,
                                         labels=labels, **layout_kwargs)
    groups = group_by_slice(prompts)
    result = StackResult(labels, objects=len({p.object_id for p in prompts}))
    with dask_client(client, scheduler, n_workers, processes) as client:
        finished = _run_tasks(client, spec, image, layout, limits, groups, result, progress,
                              should_stop)
    for index in sorted(finished):
        paste_result(labels, finished[index], result, overwrite)
    if propagate and not result.cancelled:
        from .propagate import propagate_objects

        segmenter = worker_segmenter(spec)
        computed, reused = segmenter.computed, segmenter.reused
        propagate_objects(segmenter, image, layout, limits, groups, result,
                          score_threshold=score_threshold, overwrite=overwrite,
                          progress=progress, should_stop=should_stop)
        result.computed += segmenter.computed - computed
        result.reused += segmenter.reused - reused
    result.seconds = time.perf_counter() - start
    return result


def _run_tasks(client, spec, image, layout, limits, groups, result, progress, should_stop):
    from distributed import as_completed

    futures = {}
    for index, prompts in groups.items():
        if should_stop is not None and should_stop():
            result.cancelled = True
            break
        futures[client.submit(segment_slice_task, spec, model_slice(image, layout, index, limits),
                              prompts, pure=False)] = index
    finished: dict[tuple, SliceResult] = {}
    pending = as_completed(list(futures))
    for future in pending:
        sliced, computed, reused = future.result()
        finished[futures[future]] = sliced
        result.computed += computed
        result.reused += reused
        if progress is not None:
            progress(len(finished), len(groups))
        if should_stop is not None and should_stop():
            result.cancelled = True
            client.cancel([f for f in futures if not f.done()])
            break
    return finished
