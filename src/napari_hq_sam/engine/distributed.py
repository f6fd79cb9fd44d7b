"""Runs over slices on a Dask cluster: the :mod:`.runner` jobs, one task per slice.

Workers receive a :class:`ModelSpec` (how to load the model, not the model) and the
job, and load the model once per process, in :func:`worker_segmenter`; threads of a
worker share that model and its embedding cache, each with its own predictor. The
main process reads and converts the slices, and records the returned outputs in
slice order, so the labels are identical to a single-process run. Prompted stacks
(:func:`segment_stack_distributed`) and segment everything
(:func:`segment_everything_distributed`) are two jobs on this one path.

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

from ..automatic import AutoMaskConfig
from ..errors import HQSamError, InputError
from ..weights import cached_checkpoint
from .cache import EmbeddingCache, model_signature
from .everything import EverythingJob, finish_everything, run_labels
from .image import ImageLayout
from .prompts import ObjectPrompt
from .propagate import propagate_objects
from .runner import (
    Progress,
    ShouldStop,
    SliceJob,
    SlicePlan,
    StackResult,
    plan_slices,
)
from .segmenter import SliceSegmenter
from .stack import PromptJob, prepare_prompted
from .tiles import DEFAULT_TILING, Tiling

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
                # the official file (None) is signed by its sha256, as the widgets sign it
                checkpoint = spec.checkpoint or cached_checkpoint(spec.model_type)
                signature = model_signature(model, checkpoint, spec.adapter)
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


def slice_task(spec: ModelSpec, job: SliceJob, index: tuple[int, ...], image
               ) -> tuple[object, int, int]:
    """Dask task: ``job`` on one slice; returns ``(output, computed, reused)`` embeddings."""
    segmenter = worker_segmenter(spec)
    computed, reused = segmenter.computed, segmenter.reused
    # a tiled slice arrives as a SliceSource: the job embeds the windows it reads
    embedding = None if hasattr(image, "read") else segmenter.embeddings([image])[0]
    output = job.segment(segmenter, index, image, embedding, None, None)
    return output, segmenter.computed - computed, segmenter.reused - reused


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
            raise HQSamError(f"cannot reach the Dask scheduler at {scheduler}: {exc}. "
                               "Check the address and that the scheduler runs.") from None
    if not n_workers or n_workers < 1:
        raise InputError("give a Dask client, a scheduler address or a number of workers >= 1.")
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


def run_slices_distributed(job: SliceJob, image, plan: SlicePlan, spec: ModelSpec,
                           result: StackResult, *, client=None, scheduler: str | None = None,
                           n_workers: int | None = None, processes: bool = True,
                           progress: Progress | None = None,
                           should_stop: ShouldStop | None = None) -> StackResult:
    """:func:`~.runner.run_slices` with one Dask task per slice of ``plan``.

    Parameters
    ----------
    job, image, plan, result
        As in :func:`~.runner.run_slices`.
    spec : ModelSpec
        How each worker loads the model.
    client : distributed.Client, optional
        Use this client; else one joined to ``scheduler``, or a new LocalCluster of
        ``n_workers`` (with ``processes``, one thread each), closed at the end.
    progress, should_stop : callable, optional
        ``progress(done, total)`` in the job's steps as slices finish;
        ``should_stop()`` as slices are submitted and finish: True cancels the slices
        not yet finished, finished ones are recorded.
    """
    from distributed import as_completed

    def stopping() -> bool:
        return should_stop is not None and should_stop()

    finished: dict[tuple, object] = {}
    with dask_client(client, scheduler, n_workers, processes) as client:
        shared_job = client.scatter(job, broadcast=True, hash=False)
        read = plan.slice_source if plan.tiled(job) else plan.model_image
        futures = {}
        for index in plan.indices:
            if stopping():
                result.cancelled = True
                break
            futures[client.submit(slice_task, spec, shared_job, index,
                                  read(image, index), pure=False)] = index
        for future in as_completed(list(futures)):
            output, computed, reused = future.result()
            finished[futures[future]] = output
            result.computed += computed
            result.reused += reused
            if progress is not None:
                progress(len(finished) * job.steps, len(plan.indices) * job.steps)
            if stopping() and len(finished) < len(futures):
                result.cancelled = True
                client.cancel([f for f in futures if not f.done()])
                break
    for index in plan.indices:  # slice order: the same labels as one process
        if index in finished:
            job.record(result, index, finished[index])
    return result


def segment_stack_distributed(image, prompts: Sequence[ObjectPrompt], spec: ModelSpec, *,
                              client=None, scheduler: str | None = None,
                              n_workers: int | None = None, processes: bool = True,
                              contrast_limits=None, labels=None, overwrite: bool = False,
                              propagate: bool = False, score_threshold: float = 0.5,
                              tiling: Tiling | None = DEFAULT_TILING,
                              progress: Progress | None = None,
                              should_stop: ShouldStop | None = None,
                              **layout_kwargs) -> StackResult:
    """:func:`~.stack.segment_stack` with one Dask task per prompted slice.

    Parameters
    ----------
    image, prompts, contrast_limits, labels, overwrite, score_threshold, tiling
        As in :func:`~.stack.segment_stack` (a tiled slice travels to its worker as a
        window reader over ``image``, so workers read only the windows they use).
    spec : ModelSpec
        How each worker loads the model.
    client, scheduler, n_workers, processes, progress, should_stop
        As in :func:`run_slices_distributed`.
    propagate : bool
        After the cluster run, propagate in this process (loading the model here).

    Returns
    -------
    StackResult
        Identical labels to a single-process run.
    """
    start = time.perf_counter()
    plan, groups, result = prepare_prompted(image, prompts, labels,
                                            contrast_limits=contrast_limits, **layout_kwargs)
    run_slices_distributed(PromptJob(groups, overwrite, tiling), image, plan, spec, result,
                           client=client, scheduler=scheduler, n_workers=n_workers,
                           processes=processes, progress=progress, should_stop=should_stop)
    if propagate and not result.cancelled:
        propagate_objects(worker_segmenter(spec), image, plan, groups, result,
                          score_threshold=score_threshold, overwrite=overwrite, tiling=tiling,
                          progress=progress, should_stop=should_stop)
    result.seconds = time.perf_counter() - start
    return result


def segment_everything_distributed(
        image, spec: ModelSpec, config: AutoMaskConfig | None = None, *, client=None,
        scheduler: str | None = None, n_workers: int | None = None, processes: bool = True,
        layout: ImageLayout | None = None, contrast_limits: tuple[float, float] | None = None,
        slices: Sequence[tuple[int, ...]] | None = None, stitch: bool = False,
        stitch_iou: float = 0.5, tiling: Tiling | None = DEFAULT_TILING, labels=None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None, **layout_kwargs) -> StackResult:
    """:func:`~.everything.segment_everything` with one Dask task per slice.

    Parameters
    ----------
    image, config, layout, contrast_limits, slices, stitch, stitch_iou, tiling, labels
        As in :func:`~.everything.segment_everything`.
    spec : ModelSpec
        How each worker loads the model (``spec.cache_dir``: shared disk cache).
    client, scheduler, n_workers, processes, progress, should_stop
        As in :func:`run_slices_distributed`.

    Returns
    -------
    StackResult
        Identical labels to a single-process run.
    """
    start = time.perf_counter()
    plan = plan_slices(image, layout=layout, contrast_limits=contrast_limits, slices=slices,
                       **layout_kwargs)
    result = run_slices_distributed(
        EverythingJob(config or AutoMaskConfig(), tiling), image, plan, spec,
        run_labels(plan, labels, stitch), client=client, scheduler=scheduler,
        n_workers=n_workers, processes=processes, progress=progress, should_stop=should_stop)
    finish_everything(result, stitch, stitch_iou)
    result.seconds = time.perf_counter() - start
    return result
