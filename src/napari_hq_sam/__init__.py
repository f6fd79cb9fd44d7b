"""napari-hq-sam: HQ-SAM for microscopy and medical image stacks, in napari and headless.

The public names are imported lazily so that napari can read the plugin manifest
without importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "build_hq_sam": "napari_hq_sam.model",
    "HQSam": "napari_hq_sam.model",
    "CheckpointError": "napari_hq_sam.model",
    "MODEL_TYPES": "napari_hq_sam.model",
    "HQSamPredictor": "napari_hq_sam.predictor",
    "ImageEmbedding": "napari_hq_sam.predictor",
    "download_checkpoint": "napari_hq_sam.weights",
    "DownloadError": "napari_hq_sam.weights",
    "load_model": "napari_hq_sam.loading",
    "pick_device": "napari_hq_sam.device",
    "viewer_session": "napari_hq_sam.session",
    "ViewerSession": "napari_hq_sam.session",
    "HQSamError": "napari_hq_sam.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_hq_sam' has no attribute {name!r}")
