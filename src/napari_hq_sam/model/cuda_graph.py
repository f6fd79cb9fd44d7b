"""Replay HQ-SAM's image encoding as a CUDA graph for single slices.

One slice through the encoder launches thousands of small kernels (TinyViT
especially); on a GPU the Python side that launches them, not the GPU, sets the
time of an interactive click on a new slice. SAM's input is always one fixed
shape, (B, 3, 1024, 1024), so the whole encoding (encoder and HQ features) can be
captured once as a CUDA graph and replayed: the same kernels on the same
weights, launched by one call.

The graph is keyed by the input's shape and dtype and the precision; all graphs
are dropped when a weight changes (edited in place, replaced, moved or reloaded,
see :func:`._weights_cache.weights_key`), since they read the old memory. The
:data:`MAX_GRAPHS` most recent graphs are kept (each memory pool holds the
activations of one forward pass). Captures that fail (an operation that cannot be
captured) switch the model back to eager encoding with a warning.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ._inference import inference_only
from ._weights_cache import weights_key

# Largest batch replayed from a graph. Larger batches keep the GPU busy while
# Python launches kernels, so a graph gains little there, and each graph's
# memory pool would hold the activations of the whole batch.
GRAPH_MAX_BATCH = 1
# Graphs kept per model (e.g. one per precision); each pool holds the
# activations of one forward pass.
MAX_GRAPHS = 2


def graphs_apply(model: nn.Module, images: torch.Tensor) -> bool:
    """True when :func:`graphed_call` should encode ``images``: a CUDA input of at most
    :data:`GRAPH_MAX_BATCH` slices, an inference-only model, graphs not switched off
    (``model.cuda_graphs``)."""
    return (images.is_cuda and images.shape[0] <= GRAPH_MAX_BATCH
            and getattr(model, "cuda_graphs", True)
            and all(inference_only(m) for m in model.modules()))


class _CapturedCall:
    """One captured call of ``fn`` on a static input buffer."""

    def __init__(self, fn: Callable[[torch.Tensor], tuple], example: torch.Tensor,
                 warmup: int = 2):
        # holding fn holds what it closes over (e.g. a reduced-precision weight
        # copy): the graph reads that memory, which must outlive the graph
        self.fn = fn
        self.static_input = example.clone()
        # warm-up on a side stream: fills lazily built caches (bias tables,
        # reduced-precision weight copies, cuDNN plans) outside the capture
        side = torch.cuda.Stream(example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: napari's other threads may use CUDA while this one captures
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_output = fn(self.static_input)

    def __call__(self, images: torch.Tensor) -> tuple:
        self.static_input.copy_(images)
        self.graph.replay()
        # the next replay overwrites the static outputs
        return tuple(t.clone() for t in self.static_output)


def graphed_call(model: nn.Module, fn: Callable[[torch.Tensor], tuple],
                 images: torch.Tensor, variant: tuple = ()) -> tuple:
    """``fn(images)`` replayed from a CUDA graph cached on ``model``.

    Parameters
    ----------
    model : nn.Module
        Owner of the cache; every parameter and buffer of it is part of the key.
    fn : callable
        ``fn(images) -> tuple of tensors``, capturable (no host synchronisation,
        no new CPU tensors per call).
    images : torch.Tensor
        (B, 3, 1024, 1024) CUDA tensor.
    variant : tuple
        What else selects the work ``fn`` does (precision, the identity of a
        weight copy it uses); part of the key.

    Returns
    -------
    tuple of torch.Tensor
        Fresh tensors, equal to ``fn(images)``.
    """
    cache = model.__dict__.setdefault("_cuda_graph_cache", _GraphCache())
    with cache.lock:  # one static input buffer per graph: threads take turns
        weights = weights_key(model)
        if cache.weights != weights:
            cache.graphs.clear()  # weights changed: the graphs would read outdated memory
            cache.weights = weights
        key = (tuple(images.shape), images.dtype, images.device, variant)
        if key in cache.graphs:
            cache.graphs.move_to_end(key)
            return cache.graphs[key](images)
        while len(cache.graphs) >= MAX_GRAPHS:
            cache.graphs.popitem(last=False)  # free the oldest pool before capturing
        try:
            cache.graphs[key] = _CapturedCall(fn, images)
        except RuntimeError as err:
            warnings.warn(f"CUDA graph capture of the encoder failed ({err}); encoding "
                          "without graphs from now on.", RuntimeWarning, stacklevel=3)
            model.cuda_graphs = False
            cache.graphs.clear()
            return fn(images)
        return cache.graphs[key](images)


class _GraphCache:
    """A model's captured graphs, the weights they were captured with, and a lock.

    Copies and pickles of the model get an empty cache (graphs belong to one
    process and one set of weight tensors).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.graphs: OrderedDict = OrderedDict()
        self.weights: tuple | None = None

    def __len__(self) -> int:
        return len(self.graphs)

    def __deepcopy__(self, memo) -> _GraphCache:
        return _GraphCache()

    def __reduce__(self):
        return (_GraphCache, ())
