"""One call from a model name (and optional file) to a ready model on the best device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .device import pick_device
from .model import HQSam, build_hq_sam
from .weights import download_checkpoint


def load_model(model_type: str, checkpoint: str | Path | None = None,
               device: str | None = None, progress: bool | Callable[[int, int], None] = True,
               precision: str = "fp32") -> HQSam:
    """Load HQ-SAM with official weights.

    Parameters
    ----------
    model_type : str
        ``vit_tiny``, ``vit_b``, ``vit_l`` or ``vit_h``.
    checkpoint : str or Path, optional
        Local checkpoint file. When None the official file is taken from the
        cache, downloading it on first use (:func:`~napari_hq_sam.weights.download_checkpoint`).
    device : str, optional
        ``cuda``, ``mps``, ``cpu``; None or ``auto`` picks CUDA, then MPS, then CPU.
    progress : bool or callable
        Show a download progress bar (True), or report ``progress(bytes done, total)``.
    precision : str
        Encoder precision: ``fp32`` (exact), ``bf16``, ``fp16`` or ``auto`` (the
        fastest reduced precision on the device, see
        :func:`~napari_hq_sam.model.fast.best_precision`).
    """
    target = pick_device(device)
    path = checkpoint if checkpoint is not None else download_checkpoint(model_type, progress)
    model = build_hq_sam(model_type, path, device=target)
    model.precision = precision
    return model
