"""The one way images reach the encoder: batches sized here, halved on out-of-memory.

:func:`encode_slices` is what the slice segmenter, stack runs, segment everything,
the Dask workers and training call; :func:`auto_batch_size` is the one place that
decides how many slices go through the encoder at once (from free GPU memory; 1 on
CPUs). Each slice gives the same :class:`~napari_hq_sam.predictor.ImageEmbedding` as
``HQSamPredictor.set_image`` (same resizing, normalisation and padding), whatever
the batch size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from ..errors import InputError
from ..predictor import ImageEmbedding

# Rough peak GPU memory of one 1024 x 1024 slice through the encoder in fp32 (GiB),
# activations only; bf16/fp16 take about half. Underestimates are caught by the
# out-of-memory halving, so these only pick a good first batch size.
_GIB_PER_SLICE = {"vit_tiny": 0.45, "vit_b": 0.6, "vit_l": 0.9, "vit_h": 1.1}
MAX_BATCH = 32
# Threads resizing slices ahead of the encoder (PIL releases the GIL).
RESIZE_WORKERS = 8


@dataclass
class RawEncoding:
    """An image's encoder outputs before the HQ fusion layers, which training trains.

    ``embeddings`` is (1, 256, 64, 64) and ``early`` the (1, 64, 64, C) early ViT
    feature (channels last), both float32; ``original_size`` and ``input_size`` are
    as in :class:`~napari_hq_sam.predictor.ImageEmbedding`.
    """

    embeddings: torch.Tensor
    early: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's parameters."""
    return next(model.parameters()).device


def auto_batch_size(model, device: torch.device | None = None, free_bytes: int | None = None,
                    fraction: float = 0.7) -> int:
    """Batch size for :func:`encode_slices` from the device's free memory.

    Parameters
    ----------
    model : HQSam
        Gives the backbone (``model_type``) and precision.
    device : torch.device, optional
        Defaults to the model's device. CPUs (and MPS) get 1: batching does not
        speed up their encoders, and 1 keeps the peak memory lowest.
    free_bytes : int, optional
        Free memory to plan with; default ``torch.cuda.mem_get_info``.
    fraction : float
        Share of the free memory the batch may use.

    Returns
    -------
    int
        Between 1 and ``MAX_BATCH``.
    """
    device = model_device(model) if device is None else torch.device(device)
    if device.type != "cuda":
        return 1
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_slice = _GIB_PER_SLICE.get(getattr(model, "model_type", ""), 1.2) * 2**30
    if getattr(model, "precision", "fp32") != "fp32":
        per_slice /= 2
    return int(max(1, min(MAX_BATCH, fraction * free_bytes // per_slice)))


def _resize(image: np.ndarray, transform: ResizeLongestSide) -> np.ndarray:
    """``transform.apply_image`` after checking the image is uint8 (H, W, 3)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError("encode_slices takes uint8 (H, W, 3) images; got "
                         f"{image.dtype} {image.shape}.")
    return transform.apply_image(image)


class _ResizeAhead:
    """Resizes images in worker threads, ahead of the encoder, in order.

    PIL's resampling releases the GIL, so resizing the next batch on the host
    overlaps the GPU's work on the current one (and several slices resize at
    once).
    """

    def __init__(self, images: Sequence[np.ndarray], transform: ResizeLongestSide,
                 workers: int):
        self.images, self.transform = images, transform
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.pending: deque[Future] = deque()
        self.submitted = 0

    def take(self, count: int, ahead: int) -> list[np.ndarray]:
        """The next ``count`` resized images; keeps ``ahead`` more in flight."""
        while self.submitted < len(self.images) and len(self.pending) < count + ahead:
            self.pending.append(self.pool.submit(_resize, self.images[self.submitted],
                                                 self.transform))
            self.submitted += 1
        return [self.pending.popleft().result() for _ in range(min(count, len(self.pending)))]

    def put_back(self, resized: list[np.ndarray]) -> None:
        """Return taken images to the front of the queue (a batch to retry)."""
        for image in reversed(resized):
            done: Future = Future()
            done.set_result(image)
            self.pending.appendleft(done)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def prepare_batch(model, resized: Sequence[np.ndarray],
                  device: torch.device) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Normalise and pad resized uint8 (h, w, 3) images as ``SamPredictor.set_image`` does.

    Returns
    -------
    batch : torch.Tensor
        (B, 3, 1024, 1024) float32 on ``device``.
    input_sizes : list of tuple of int
        (h, w) of each resized image before padding.
    """
    tensors, sizes = [], []
    for image in resized:
        tensor = torch.as_tensor(image, device=device).permute(2, 0, 1).contiguous()[None]
        sizes.append(tuple(tensor.shape[-2:]))
        tensors.append(model.preprocess(tensor))
    return torch.cat(tensors), sizes


def _encode_batch(model, images, resized, device, to_cpu, fuse):
    batch, sizes = prepare_batch(model, resized, device)
    embeddings, features = model.encode(batch, fuse=fuse)
    out = []
    for i, image in enumerate(images):
        parts = (embeddings[i:i + 1].clone(), features[i:i + 1].clone(),
                 tuple(image.shape[:2]), sizes[i])
        if not fuse:
            out.append(RawEncoding(*(p.cpu() if to_cpu else p for p in parts[:2]), *parts[2:]))
            continue
        emb = ImageEmbedding(*parts)
        out.append(emb.to("cpu") if to_cpu else emb)
    return out


def encode_slices(model, images: Sequence[np.ndarray], batch_size: int | None = None,
                  progress: Callable[[int, int], None] | None = None, *,
                  should_stop: Callable[[], bool] | None = None, to_cpu: bool = True,
                  fuse: bool = True) -> list[ImageEmbedding] | list[RawEncoding]:
    """Encode slices in batches; halve the batch and retry when the GPU runs out of memory.

    Parameters
    ----------
    model : HQSam
        The model; its ``precision`` applies.
    images : sequence of np.ndarray
        uint8 (H, W, 3) images (sizes may differ).
    batch_size : int, optional
        First batch size to try; default :func:`auto_batch_size` (1 on CPUs).
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch.
    should_stop : callable, optional
        Asked before each batch; when it returns True the encodings finished so far
        are returned (fewer than ``images``).
    to_cpu : bool
        Return the results on the CPU (what the engine caches) rather than on the
        model's device.
    fuse : bool
        True: :class:`~napari_hq_sam.predictor.ImageEmbedding` (embeddings and fused
        HQ features, what the decoder needs). False: :class:`RawEncoding` (the early
        feature before fusion, for training the fusion layers).

    Returns
    -------
    list of ImageEmbedding or list of RawEncoding
        One per image, in order; ``embeddings`` (1, 256, 64, 64) and
        ``hq_features`` (1, 32, 256, 256), or ``early`` (1, 64, 64, C).

    Raises
    ------
    torch.OutOfMemoryError
        Even one slice does not fit.
    """
    device = model_device(model)
    size = auto_batch_size(model, device) if batch_size is None else int(batch_size)
    if size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}.")
    transform = ResizeLongestSide(model.image_encoder.img_size)
    resizer = _ResizeAhead(images, transform, workers=min(RESIZE_WORKERS, os.cpu_count() or 1))
    out: list = []
    try:
        while len(out) < len(images):
            if should_stop is not None and should_stop():
                break
            chunk = images[len(out):len(out) + size]
            resized = resizer.take(len(chunk), ahead=size)
            try:
                out.extend(_encode_batch(model, chunk, resized, device, to_cpu, fuse))
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                resizer.put_back(resized)
                size = max(1, size // 2)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if progress is not None:
                progress(len(out), len(images))
    finally:
        resizer.close()
    return out
